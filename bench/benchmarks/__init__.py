"""One module per benchmark, named as the benchmark, exposing ``run(args) -> dict`` (bench.registry finds them).

Each benchmark works in its own temporary var dir (the committed config with every runtime path moved
there), measures the things it compares side by side in one process and one run, and returns a dict
with ``description``, ``table``, ``notes`` and the raw numbers. Synthetic events are generated once per
process and shared read-only (a symlinked events layer, bench.data) by the benchmarks that need the same log.
"""
