"""Unit tests of server/config: langgraph.json, graph forms, store and http."""
