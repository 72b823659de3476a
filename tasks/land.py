"""Land delivered files into the immutable raw layer: ``raw/source=<name>/dt=<day>/``.

A day is landed as byte copies in one atomic rename. Raw data never changes once landed: landing the
same bytes again is a reported no-op; different bytes for a landed day are an error naming the file
(a corrected delivery needs a deliberate manual decision, not a silent overwrite).

That decision is ``--redeliver`` (``land_day(..., redeliver=True)``): the landed partition moves, whole, to
``superseded/source=<name>/dt=<day>/<n>/`` (``tasks.layers.superseded_dir``) beside a ``<n>.json`` record
(when, why, what differed, the SHA-256 of every old and new file), and the corrected files land in its place.
Nothing is deleted. Cleaning the day again then replaces its events and quarantine partitions.

Spark's file index ignores names starting with ``_`` or ``.`` (even by explicit path), and multi-part
exports name files like ``_part2.csv``: such a file is landed as ``delivered<name>`` (e.g.
``delivered_part2.csv``) and ``RAW_MANIFEST`` (itself skipped by Spark) maps landed names to delivered ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import hashlib
import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from tasks.availability import day_folders, newest_text
from tasks.config import PipelineConfig, SourceName, add_common_args, config_from_args, parse_ds
from tasks.errors import DataError, NoDataError, run_cli
from tasks.layers import (
    incoming_partition,
    raw_partition,
    redelivery_record,
    superseded_copies,
    superseded_dir,
)

log = logging.getLogger(__name__)


RAW_MANIFEST = "_delivered_names.json"
_SAFE_PREFIX = "delivered"


def skipped_by_spark(name: str) -> bool:
    """Whether Spark's file index ignores a file of this name, even one passed by explicit path."""
    return name.startswith(("_", ".")) or name.endswith("._COPYING_")


class RawConflictError(DataError):
    """A day is already landed with different content; raw data is immutable."""


DEFAULT_REDELIVERY_REASON = "corrected re-export"


@dataclass(frozen=True)
class LandReport:
    source: str
    day: dt.date
    target: Path
    files: tuple[str, ...]
    n_bytes: int
    already_landed: bool
    # Where a re-delivery moved the partition it replaced (its record inside); None when nothing was replaced.
    superseded: Path | None = None


def _land(
    cfg: PipelineConfig,
    source: str,
    day: dt.date,
    files: dict[str, Path],
    *,
    redeliver: bool = False,
    reason: str = DEFAULT_REDELIVERY_REASON,
    how_to_redeliver: str = "",
) -> LandReport:
    """Copy ``files`` (target name -> source path) into the day's raw partition atomically.

    With ``redeliver``, a partition already landed with other content is superseded (see the module docstring).
    """
    if source not in get_args(SourceName):
        raise ValueError(f"unknown source {source!r}; known: {', '.join(get_args(SourceName))}")
    target = raw_partition(cfg, source, day)
    files = _spark_readable_names(files)
    renamed = {n: p.name for n, p in files.items() if n != p.name}
    names = tuple(sorted(files))
    n_bytes = sum(files[n].stat().st_size for n in names)
    if target.exists():
        conflict = _conflict(target, files, renamed)
        if conflict is None:
            log.info("raw %s already landed with identical bytes; nothing to do", target)
            return LandReport(source, day, target, names, n_bytes, already_landed=True)
        if not redeliver:
            raise RawConflictError(
                f"{conflict}; raw data is immutable. To replace it with a corrected re-export (the old files are "
                f"kept aside): python -m tasks.land --day {day} --source {source} {how_to_redeliver}--redeliver"
            )
        superseded = _supersede_and_land(cfg, source, day, target, files, renamed, conflict, reason)
        return LandReport(source, day, target, names, n_bytes, already_landed=False, superseded=superseded)

    target.parent.mkdir(parents=True, exist_ok=True)
    _staged(target, files, renamed).rename(target)
    log.info("landed %d file(s), %d bytes into %s", len(names), n_bytes, target)
    return LandReport(source, day, target, names, n_bytes, already_landed=False)


def _conflict(target: Path, files: dict[str, Path], renamed: dict[str, str]) -> str | None:
    """Why the landed ``target`` differs from this delivery; None when it holds exactly these bytes."""
    landed = sorted(p.name for p in target.iterdir() if p.name != RAW_MANIFEST)
    manifest = target / RAW_MANIFEST
    if (json.loads(manifest.read_text()) if manifest.exists() else {}) != renamed:
        return f"raw partition {target} was landed with other delivered file names ({manifest})"
    for name in sorted(files):
        if name not in landed:
            return f"raw partition {target} is already landed without {name!r} (it has {landed})"
        if not filecmp.cmp(files[name], target / name, shallow=False):
            return f"{files[name]} differs from the already landed {target / name}"
    extra = sorted(set(landed) - set(files))
    if extra:
        return f"raw partition {target} holds files not in this delivery: {extra}"
    return None


def _staged(target: Path, files: dict[str, Path], renamed: dict[str, str]) -> Path:
    """A complete copy of the delivery in a temporary folder beside ``target``, ready to be renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in sorted(files):
            shutil.copyfile(files[name], tmp / name)
        if renamed:
            (tmp / RAW_MANIFEST).write_text(json.dumps(renamed, indent=1, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _supersede_and_land(
    cfg: PipelineConfig,
    source: str,
    day: dt.date,
    target: Path,
    files: dict[str, Path],
    renamed: dict[str, str],
    conflict: str,
    reason: str,
) -> Path:
    """Move the landed ``target`` to the next superseded copy (with its record) and land ``files`` in its place."""
    copies = superseded_copies(cfg, source, day)
    dest = superseded_dir(cfg, source, day) / str(int(copies[-1].name) + 1 if copies else 1)
    record = {
        "source": source,
        "day": day.isoformat(),
        # The wall-clock time of the operator's decision: an audit fact, not a pipeline input.
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "reason": reason,
        "difference": conflict,
        "raw_partition": str(target),
        "superseded_sha256": {p.name: _sha256(p) for p in sorted(target.iterdir()) if p.is_file()},
        "landed_sha256": {name: _sha256(files[name]) for name in sorted(files)},
        "landed_from": {name: str(files[name]) for name in sorted(files)},
    }
    staged = _staged(target, files, renamed)
    record_file = redelivery_record(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The record first: a re-delivery interrupted after it still says what was under way.
        record_file.write_text(json.dumps(record, indent=1) + "\n")
        target.rename(dest)
    except BaseException:
        record_file.unlink(missing_ok=True)
        shutil.rmtree(staged, ignore_errors=True)
        raise
    try:
        staged.rename(target)
    except BaseException:
        # Put the old partition back: a failed re-delivery leaves raw as it was.
        dest.rename(target)
        record_file.unlink(missing_ok=True)
        shutil.rmtree(staged, ignore_errors=True)
        raise
    log.warning(
        "re-delivery of %s %s: the landed partition moved to %s (%s); landed %s", source, day, dest, reason, target
    )
    return dest


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


def land_day(
    cfg: PipelineConfig,
    day: dt.date,
    source: str | None = None,
    *,
    redeliver: bool = False,
    reason: str = DEFAULT_REDELIVERY_REASON,
) -> LandReport:
    """Land ``<incoming>/<source>/dt=<day>/*`` (source defaults to ``pipeline.source``); ``redeliver`` replaces a
    partition landed with other content, keeping the old one aside (see the module docstring)."""
    source = source or cfg.pipeline.source
    folder = incoming_partition(cfg, source, day)
    if not folder.is_dir():
        delivered = sorted(day_folders(folder.parent))
        raise NoDataError(
            f"no incoming delivery for {source} {day}: folder {folder} does not exist; "
            + newest_text(delivered, "delivered", folder.parent)
        )
    return land_folder(cfg, source, folder, day, redeliver=redeliver, reason=reason)


def land_folder(
    cfg: PipelineConfig,
    source: str,
    folder: Path,
    day: dt.date,
    *,
    redeliver: bool = False,
    reason: str = DEFAULT_REDELIVERY_REASON,
) -> LandReport:
    """Land every file of ``folder`` (one day's delivery; hidden files skipped) under ``dt=<day>``."""
    files = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    hidden = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.startswith("."))
    if hidden:
        # Hidden files are editor/OS litter or uploads in progress, never part of an export; say so in the log.
        log.warning("not landing hidden file(s) of %s: %s", folder, hidden)
    if not files:
        raise FileNotFoundError(f"incoming folder {folder} holds no files to land")
    return _land(cfg, source, day, files, redeliver=redeliver, reason=reason)


def land_file(
    cfg: PipelineConfig,
    source: str,
    file: Path,
    day: dt.date,
    *,
    redeliver: bool = False,
    reason: str = DEFAULT_REDELIVERY_REASON,
) -> LandReport:
    """Land one export file (e.g. a multi-day sample) under ``dt=<day>``, keeping its name."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"export file {file} does not exist")
    return _land(
        cfg, source, day, {file.name: file}, redeliver=redeliver, reason=reason, how_to_redeliver=f"--file {file} "
    )


def main(argv: list[str] | None = None) -> LandReport:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--day", type=parse_ds, required=True, help="day partition to land (YYYY-MM-DD)")
    parser.add_argument("--source", help="source name (default: pipeline.source)")
    parser.add_argument("--file", type=Path, help="land this one export file instead of the incoming folder")
    parser.add_argument(
        "--redeliver",
        action="store_true",
        help="replace a day landed with other content by this corrected delivery; the old raw partition is kept "
        "under superseded/ with a JSON record",
    )
    parser.add_argument(
        "--reason", default=DEFAULT_REDELIVERY_REASON, help="with --redeliver: why, kept in the re-delivery record"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.file is not None:
        if not args.source:
            parser.error("--file needs --source")
        report = land_file(cfg, args.source, args.file, args.day, redeliver=args.redeliver, reason=args.reason)
    else:
        report = land_day(cfg, args.day, args.source, redeliver=args.redeliver, reason=args.reason)
    state = "already landed" if report.already_landed else "landed"
    print(f"{state}: {', '.join(report.files)} -> {report.target}")
    if report.superseded is not None:
        record = redelivery_record(report.superseded)
        print(f"superseded: the replaced files are kept in {report.superseded}, record {record}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main))
