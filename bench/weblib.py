"""The dashboard (or any ASGI app) served by uvicorn in a thread, and headless Chromium: shared by
bench/dashboard.py and scripts/dashboard_screenshots.py, which both drive the page in a browser."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import uvicorn

from herder.localredis import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

# Headless and quiet: no sandbox (containers, CI), no GPU, no background traffic of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on a free loopback port for the block; yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn failed to start (see its log above)")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def chromium_path() -> str | None:
    """HERDER_CHROMIUM, else a `chromium` on PATH; None where there is none."""
    return os.environ.get("HERDER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(p: Playwright, executable: str) -> Browser:
    return p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
