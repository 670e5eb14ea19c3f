"""Runs of the Agent Server API: the engine, streaming, event log, webhooks and crons."""
