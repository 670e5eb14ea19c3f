"""Switchboard's HTTP face: settings, lifespan, routes, SSE and the CLI."""
