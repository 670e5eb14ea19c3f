"""Telemetry: request/run context, Prometheus metrics, OpenTelemetry traces, structured logs."""
