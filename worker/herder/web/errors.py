"""Error answers shared by Herder's web servers. Each app keeps its own table of which exception
gets which status and `detail` (they differ: the API answers bad input 422 with a pydantic-style
list, the dashboard 400 with a string); what is shared is how a table becomes handlers, and how a
JSON error is sent from plain ASGI middleware, before any app runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Send

# exception class -> (status, the `detail` to answer for an instance)
ErrorTable = Mapping[type[Exception], tuple[int, Callable[[Any], Any]]]


def install_error_handlers(app: FastAPI, table: ErrorTable) -> None:
    """Answer each exception of `table` (and its subclasses, unless listed themselves) with
    `{"detail": ...}` and its status."""
    for exc_type, (status, detail) in table.items():
        app.add_exception_handler(exc_type, _handler(status, detail))


def _handler(status: int, detail: Callable[[Any], Any]) -> Callable[[Request, Exception], Any]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": detail(exc)}, status_code=status)

    return handle


async def send_json(send: Send, status: int, body: bytes) -> None:
    """A whole JSON response with `body` (already encoded), sent straight through ASGI."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
