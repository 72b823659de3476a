"""Garbage-collector policy of a pipeline step's process: it imports large libraries once, runs one step, exits.

CPython's cyclic collector rescans every tracked object on each full collection, and the interpreter runs one
more as it exits. A validation gate imports Great Expectations: about 500K tracked objects, nearly all alive
until the process ends. Collections during that import took a large share of its time, and the one at exit
a noticeable pause, while finding almost nothing to free; with the import run by ``long_lived_imports`` the exit
collection all but disappears.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived_imports() -> Iterator[None]:
    """Imports of modules that stay loaded until the process ends, run with the cyclic collector paused; the
    objects then alive are frozen (``gc.freeze``: later collections, the one at exit included, skip them).

    Freezes only when the block loaded a new module, so a long-lived process (a test session) that enters it
    again with everything imported freezes nothing more.
    """
    loaded = len(sys.modules)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > loaded:
            gc.freeze()
        if was_enabled:
            gc.enable()
