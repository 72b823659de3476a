"""Reviewed expectation suites, one module per data layer, and the runner that checks them with GX.

A layer module ``expectations/<layer>.py`` exposes ``build_suite(cfg, day)`` and ``partition(cfg, day)``;
``python -m spark_jobs.validate <layer> --day D`` then checks that layer's partition.
"""
