"""Pydantic request and response schemas of the chat API."""
