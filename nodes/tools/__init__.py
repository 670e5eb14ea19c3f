"""Tools the agents may call: a registry of functions with JSON-schema arguments."""
