"""Land delivered files into the immutable raw layer: ``raw/source=<name>/dt=<day>/``.

A day is landed as byte copies in one atomic rename. Raw data never changes once landed: landing the
same bytes again is a reported no-op; different bytes for a landed day are an error naming the file
(a corrected delivery needs a deliberate manual decision, not a silent overwrite).

Spark's file index ignores names starting with ``_`` or ``.`` (even by explicit path), and multi-part
exports name files like ``_part2.csv``: such a file is landed as ``delivered<name>`` (e.g.
``delivered_part2.csv``) and ``RAW_MANIFEST`` (itself skipped by Spark) maps landed names to delivered ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from tasks.availability import day_folders, newest_text
from tasks.config import PipelineConfig, SourceName, add_common_args, config_from_args, parse_ds
from tasks.errors import DataError, NoDataError
from tasks.layers import incoming_partition, raw_partition

log = logging.getLogger(__name__)


RAW_MANIFEST = "_delivered_names.json"
_SAFE_PREFIX = "delivered"


def skipped_by_spark(name: str) -> bool:
    """Whether Spark's file index ignores a file of this name, even one passed by explicit path."""
    return name.startswith(("_", ".")) or name.endswith("._COPYING_")


class RawConflictError(DataError):
    """A day is already landed with different content; raw data is immutable."""


@dataclass(frozen=True)
class LandReport:
    source: str
    day: dt.date
    target: Path
    files: tuple[str, ...]
    n_bytes: int
    already_landed: bool


def _land(cfg: PipelineConfig, source: str, day: dt.date, files: dict[str, Path]) -> LandReport:
    """Copy ``files`` (target name -> source path) into the day's raw partition atomically."""
    if source not in get_args(SourceName):
        raise ValueError(f"unknown source {source!r}; known: {', '.join(get_args(SourceName))}")
    target = raw_partition(cfg, source, day)
    files = _spark_readable_names(files)
    renamed = {n: p.name for n, p in files.items() if n != p.name}
    names = tuple(sorted(files))
    n_bytes = sum(files[n].stat().st_size for n in names)
    if target.exists():
        landed = sorted(p.name for p in target.iterdir() if p.name != RAW_MANIFEST)
        manifest = target / RAW_MANIFEST
        if (json.loads(manifest.read_text()) if manifest.exists() else {}) != renamed:
            raise RawConflictError(
                f"raw partition {target} was landed with other delivered file names ({manifest}); raw data is immutable"
            )
        for name in names:
            if name not in landed:
                raise RawConflictError(
                    f"raw partition {target} is already landed without {name!r} (it has {landed}); "
                    "raw data is immutable"
                )
            if not filecmp.cmp(files[name], target / name, shallow=False):
                raise RawConflictError(
                    f"{files[name]} differs from the already landed {target / name}; raw data is immutable"
                )
        extra = sorted(set(landed) - set(names))
        if extra:
            raise RawConflictError(f"raw partition {target} holds files not in this delivery: {extra}")
        log.info("raw %s already landed with identical bytes; nothing to do", target)
        return LandReport(source, day, target, names, n_bytes, already_landed=True)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in names:
            shutil.copyfile(files[name], tmp / name)
        if renamed:
            (tmp / RAW_MANIFEST).write_text(json.dumps(renamed, indent=1, sort_keys=True) + "\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("landed %d file(s), %d bytes into %s", len(names), n_bytes, target)
    return LandReport(source, day, target, names, n_bytes, already_landed=False)


def _spark_readable_names(files: dict[str, Path]) -> dict[str, Path]:
    """``files`` with every name Spark would skip replaced by a readable one (see the module docstring)."""
    out: dict[str, Path] = {}
    for name, path in files.items():
        if name.endswith("._COPYING_"):
            raise DataError(f"{path} is an unfinished Hadoop copy ('._COPYING_'); deliver the finished file")
        safe = _SAFE_PREFIX + name if skipped_by_spark(name) else name
        if safe in out or (safe != name and safe in files):
            raise DataError(f"{path} would land as {safe!r}, which another delivered file already uses")
        out[safe] = path
    return out


def land_day(cfg: PipelineConfig, day: dt.date, source: str | None = None) -> LandReport:
    """Land ``<incoming>/<source>/dt=<day>/*`` (source defaults to ``pipeline.source``)."""
    source = source or cfg.pipeline.source
    folder = incoming_partition(cfg, source, day)
    if not folder.is_dir():
        delivered = sorted(day_folders(folder.parent))
        raise NoDataError(
            f"no incoming delivery for {source} {day}: folder {folder} does not exist; "
            + newest_text(delivered, "delivered", folder.parent)
        )
    files = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    hidden = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.startswith("."))
    if hidden:
        # Hidden files are editor/OS litter or uploads in progress, never part of an export; say so in the log.
        log.warning("not landing hidden file(s) of %s: %s", folder, hidden)
    if not files:
        raise FileNotFoundError(f"incoming folder {folder} holds no files to land")
    return _land(cfg, source, day, files)


def land_file(cfg: PipelineConfig, source: str, file: Path, day: dt.date) -> LandReport:
    """Land one export file (e.g. a multi-day sample) under ``dt=<day>``, keeping its name."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"export file {file} does not exist")
    return _land(cfg, source, day, {file.name: file})


def main(argv: list[str] | None = None) -> LandReport:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--day", type=parse_ds, required=True, help="day partition to land (YYYY-MM-DD)")
    parser.add_argument("--source", help="source name (default: pipeline.source)")
    parser.add_argument("--file", type=Path, help="land this one export file instead of the incoming folder")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.file is not None:
        if not args.source:
            parser.error("--file needs --source")
        report = land_file(cfg, args.source, args.file, args.day)
    else:
        report = land_day(cfg, args.day, args.source)
    state = "already landed" if report.already_landed else "landed"
    print(f"{state}: {', '.join(report.files)} -> {report.target}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
