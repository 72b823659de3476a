"""Benchmarks run by `make bench`; each writes JSON and a markdown summary under bench/results/."""
