"""Plain, typed pipeline steps; each runs from a shell (``python -m tasks.<step>``), from tests and from Airflow."""
