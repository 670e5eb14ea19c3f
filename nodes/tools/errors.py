"""The error a tool raises to tell the model why it could not do what it was asked."""

from __future__ import annotations


class ToolError(Exception):
    """A tool could not do what it was asked; the message is shown to the model."""
