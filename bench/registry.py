"""The benchmarks `make bench` knows: every module of bench.benchmarks, named as its module, run through
its ``run(args) -> dict``. Discovery imports the modules on first use; the benchmarks do not import this
module, so imports in bench/ go one way (run -> registry -> benchmarks -> harness)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable

import bench.benchmarks

Benchmark = Callable[[argparse.Namespace], dict]


def discover() -> dict[str, Benchmark]:
    """{benchmark name: its run function}, sorted by name."""
    names = sorted(m.name for m in pkgutil.iter_modules(bench.benchmarks.__path__) if not m.name.startswith("_"))
    return {name: importlib.import_module(f"bench.benchmarks.{name}").run for name in names}


BENCHMARKS: dict[str, Benchmark] = discover()
