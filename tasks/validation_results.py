"""Validation results on disk: one JSON per validated partition, read by later steps (training).

``spark_jobs.validate`` writes ``<paths.gx_dir>/results/<layer>_<key>.json`` (the catalog's
``tasks.layers.validation_result``) for every run, passed or failed, holding the summary, the Data Docs path
and a fingerprint of the partition's files. A step that must only consume validated data (training) reads it
back with ``read_result`` and compares the fingerprint, so data rebuilt after its validation counts as
unvalidated. This module imports neither Spark nor Great Expectations, so readers stay light; it sits in
``tasks`` below both its writer (``spark_jobs.validate``) and its reader (``tasks.training.data``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tasks.layers import validation_result_in


def result_path(gx_dir: Path, layer: str, key: str) -> Path:
    """Where the result of ``layer``'s partition ``key`` is stored under ``gx_dir``."""
    return validation_result_in(gx_dir, layer, key)


def partition_fingerprint(folder: Path) -> str:
    """Digest of the relative path, size and modification time of every file under ``folder``.

    Cheap (no file is read) and changes whenever the partition is rewritten, which every builder here
    does by writing a new folder and swapping it in.
    """
    folder = Path(folder)
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        entries.append(f"{path.relative_to(folder).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_result(path: Path, summary: Any, *, layer: str, key: str, partition: Path) -> Path:
    """Write ``summary`` (a ValidationSummary) with the partition's fingerprint, atomically."""
    payload = {
        "layer": layer,
        "key": key,
        "partition": str(partition),
        "fingerprint": partition_fingerprint(partition) if Path(partition).is_dir() else None,
        "success": bool(summary.success),
        "description": summary.describe(),
        "summary": _jsonable(summary),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def read_result(path: Path) -> dict[str, Any] | None:
    """The stored result, or None when the partition was never validated (or the file is unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
