"""Row counts of Parquet partitions from their file footers: no Spark job, no data read."""

from __future__ import annotations

from pathlib import Path


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files directly under ``folder`` that Spark's reader reads (it skips "_" and "." names)."""
    if not Path(folder).is_dir():
        return []
    return [f for f in sorted(Path(folder).glob("*.parquet")) if not f.name.startswith(("_", "."))]


def parquet_rows(folder: Path) -> int | None:
    """Rows in ``folder``'s Parquet files; None when it holds none (a missing partition)."""
    import pyarrow.parquet as pq

    files = parquet_files(folder)
    return sum(pq.read_metadata(f).num_rows for f in files) if files else None
