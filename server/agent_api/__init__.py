"""The LangGraph Agent Server API (assistants, threads, runs, crons, store) at the SDK's paths."""
