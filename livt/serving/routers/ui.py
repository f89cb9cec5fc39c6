"""``GET /``: a one-page demo (static HTML + JS, no build step) that calls ``/v1/predict``."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from livt.serving.security import PAGE_CSP

STATIC_DIR = files("livt.serving") / "static"

router = APIRouter(tags=["ui"])


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP})
