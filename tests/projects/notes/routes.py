"""The project's custom routes (`http.app`), served beside the Agent Server API."""

from __future__ import annotations

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/notes/greeting")
async def greeting() -> dict[str, str]:
    """The greeting the project's env sets."""
    return {"greeting": os.environ.get("NOTES_GREETING", "no greeting")}
