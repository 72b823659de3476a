"""The test Redis server (127.0.0.1:6379), the Celery broker of the e2e tier's Airflow."""

from __future__ import annotations

import os
import socket

import pytest

URL = "redis://127.0.0.1:6379/0"


def unavailable() -> str | None:
    """Why the server cannot be used (None: it answers PING); fails when CI=true, where it must be there."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=3) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
        if reply.startswith(b"+PONG"):
            return None
        problem = f"answered {reply!r} to PING"
    except OSError as e:
        problem = f"does not answer: {e}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis at 127.0.0.1:6379 {problem} and CI=true")
    return f"Redis at 127.0.0.1:6379 {problem}"
