"""Identity and ownership: LangGraph's custom-auth contract (`langgraph_sdk.Auth`), the built-in
authenticator (API keys, JWT), the request's caller, browser safety and per-identity limits."""

from server.auth.caller import ADMIN, OPEN, Caller, CallerDep, caller_of, get_caller
from server.auth.contract import AuthError, Authorizer

__all__ = [
    "ADMIN",
    "OPEN",
    "AuthError",
    "Authorizer",
    "Caller",
    "CallerDep",
    "caller_of",
    "get_caller",
]
