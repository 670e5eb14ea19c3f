"""Declared agent graphs: one module per agent, each with a builder and a module-level `graph`."""
