"""A custom route of the project (langgraph.json `http.app`)."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    """Say hello (and whether the server found a caller for this request)."""
    caller = request.scope.get("state", {}).get("caller")
    return JSONResponse({"hello": "world", "caller": getattr(caller, "identity", None)})


app = Starlette(routes=[Route("/hello", hello)])
