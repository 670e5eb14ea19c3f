"""Other protocols that reach the assistants: MCP (`mcp.py`) and A2A (`a2a.py`)."""
