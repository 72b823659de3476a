"""A fresh database on the test PostgreSQL server (127.0.0.1:5432, user postgres, trust auth), dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def unavailable() -> str | None:
    """Why the test server cannot be used (None: it answers); fails when CI=true, where it must be there."""
    import psycopg

    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 does not answer and CI=true: {e}")
        return f"PostgreSQL at 127.0.0.1:5432 does not answer (user postgres, trust auth): {e}"
    return None


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty database; skips where no server answers, fails when CI=true (CI has one)."""
    import psycopg

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
