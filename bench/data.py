"""The data the benchmarks share: the synthetic events layer (generated once per process and size, linked
read-only into each benchmark's var dir), a training set built from it, and the real exports that the
quality benchmarks backtest (bench/backtests.yaml) with the command that does it."""

from __future__ import annotations

import atexit
import datetime as dt
import math
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness import timed
from tasks.config import REPO_ROOT, PipelineConfig
from tasks.layers import (
    DAY_KEY,
    events_root,
    features_partition,
    partition_dir,
    training_set_candidates,
    training_set_split,
)
from tasks.partitions import parquet_rows
from tasks.schema import EVENT_COLUMNS

# Synthetic events per user and generated day at the default generator settings (measured: ~10.5);
# used only to choose a population size for a target event count; the actual count is reported.
EVENTS_PER_USER_DAY = 10.5
BACKTESTS = REPO_ROOT / "bench" / "backtests.yaml"


_CORPUS_ROOT: Path | None = None
_CORPORA: dict[tuple[str, str], tuple[Path, int]] = {}


def _corpus_root() -> Path:
    global _CORPUS_ROOT
    if _CORPUS_ROOT is None:
        _CORPUS_ROOT = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
        atexit.register(shutil.rmtree, _CORPUS_ROOT, True)
    return _CORPUS_ROOT


def synthetic_events(cfg: PipelineConfig, n_users: int, n_days: int, raw_last: int = 0) -> tuple[Path, int]:
    """A canonical events layer (events/dt=<day>/part-00000.parquet) of the synthetic generator's log.

    Generated once per (generator settings, users, days) and process. The CSVs become Parquet with a
    DuckDB COPY (types of tasks.schema.EVENT_COLUMNS), not with spark_jobs.clean_events: the
    benchmarks that use it measure the later stages. Its files read like the pipeline's own (INT64
    microsecond timestamps, dictionary-encoded strings, Snappy), so a stage reading them costs what it
    costs on events written by Spark (bench/README.md). The last ``raw_last`` days stay deliveries instead, as
    the generator wrote them (``<layer>/../raw/dt=<day>/events.csv``, the drop zone's layout), for a benchmark
    that lands and cleans them itself. Returns (layer root, number of events).
    """
    import duckdb

    from tasks.sources.synthetic import generate

    gen = cfg.generator.model_copy(update={"n_users": n_users, "n_days": n_days})
    key = (gen.model_dump_json(), cfg.pipeline.timezone, raw_last)
    if key in _CORPORA:
        return _CORPORA[key]
    base = _corpus_root() / f"u{n_users}-d{n_days}-{len(_CORPORA)}"
    report, gen_s = timed(lambda: generate(gen, base / "csv", tz=cfg.pipeline.timezone))
    layer = base / "events"
    casts = {"timestamp": "TIMESTAMPTZ", "string": "VARCHAR", "double": "DOUBLE"}
    select = ", ".join(f"CAST({c} AS {casts[t]}) AS {c}" for c, t in EVENT_COLUMNS.items())
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    delivered = report.days[len(report.days) - raw_last :] if raw_last else []
    for day in delivered:
        (base / "raw").mkdir(exist_ok=True)
        shutil.move(partition_dir(base / "csv", DAY_KEY, day), partition_dir(base / "raw", DAY_KEY, day))
    for day in report.days[: len(report.days) - raw_last]:
        src = partition_dir(base / "csv", DAY_KEY, day) / "events.csv"
        out = partition_dir(layer, DAY_KEY, day)
        out.mkdir(parents=True)
        con.execute(
            f"COPY (SELECT {select} FROM read_csv('{src}', header = true, all_varchar = true)) "
            f"TO '{out / 'part-00000.parquet'}' (FORMAT parquet)"
        )
    con.close()
    shutil.rmtree(base / "csv")
    print(
        f"  synthetic log: {report.n_events} events of {n_users} users x {n_days} days "
        f"(generate {gen_s:.1f}s, to Parquet {time.perf_counter() - started:.1f}s)",
        flush=True,
    )
    _CORPORA[key] = (layer, report.n_events)
    return _CORPORA[key]


def link_events(cfg: PipelineConfig, layer: Path) -> None:
    """Make ``layer`` the events layer of ``cfg`` (read-only use: nothing in the benchmarks writes events)."""
    target = events_root(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(layer, target_is_directory=True)


def events_rows(layer: Path, days: list[dt.date]) -> int:
    """Events in the day partitions ``days`` of ``layer``, from Parquet footers."""
    return sum(parquet_rows(partition_dir(layer, DAY_KEY, d)) or 0 for d in days)


def build_synthetic_training_set(cfg: PipelineConfig, spark, n_users: int, n_days: int):
    """Synthetic events linked into ``cfg`` and a training set of its latest labelled cutoffs."""
    from spark_jobs import training_set

    layer, n_events = synthetic_events(cfg, n_users, n_days)
    link_events(cfg, layer)
    info, s = timed(lambda: training_set.build(cfg, spark=spark))
    print(f"  training set {info.manifest['id']}: rows {info.manifest['rows']} ({s:.0f}s)", flush=True)
    return info, n_events


def _grow_folders(folders: list[Path], target_rows: int, n_files: int) -> int:
    """Grow the Parquet folders ``folders`` (the first one's rows count towards ``target_rows``) by the same
    number of copies of their rows under new user ids (suffix ``#k.n``, n the rows before, so ids stay unique
    when a grown folder grows again), so rows that belong together (a user and its candidates) stay together;
    each written as ``n_files`` files and swapped in; returns the first folder's row count."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    before = sum(pq.read_metadata(f).num_rows for f in folders[0].glob("*.parquet"))
    copies = max(1, math.ceil(target_rows / before))
    for folder in folders:
        table = pa.concat_tables(pq.read_table(f) for f in sorted(folder.glob("*.parquet")))
        parts = []
        for k in range(copies):
            ids = (
                table["user_id"]
                if k == 0
                else pc.binary_join_element_wise(table["user_id"], pa.scalar(f"{k}.{before}"), "#")
            )
            parts.append(table.set_column(table.schema.get_field_index("user_id"), "user_id", ids))
        grown = pa.concat_tables(parts)
        tmp = folder.with_name(f".{folder.name}.tmp")
        tmp.mkdir()
        step = math.ceil(grown.num_rows / n_files)
        for i in range(n_files):
            pq.write_table(grown.slice(i * step, step), tmp / f"part-{i:05d}.parquet")
        shutil.rmtree(folder)
        tmp.rename(folder)
    return before * copies


def replicate_features(cfg: PipelineConfig, ds: dt.date, target_users: int, n_files: int) -> int:
    """Grow features/user/ds=<ds>/ to ~target_users rows by copying the real rows under new user ids, and
    features/user_category/ds=<ds>/ by the same copies so every user keeps its candidates; returns the user
    row count."""
    return _grow_folders(
        [features_partition(cfg, layer, ds) for layer in ("user", "user_category")], target_users, n_files
    )


def replicate_training_split(training_set: Path, split: str, target_rows: int, n_files: int) -> int:
    """Grow one split of a training set (its user rows and their candidate rows) to ~target_rows rows by
    copying them under new user ids; returns the split's row count. The set's validation result no longer
    matches its files: train it with ``allow_unvalidated``."""
    folders = [training_set_split(training_set, split), training_set_candidates(training_set, split)]
    return _grow_folders(folders, target_rows, n_files)


def grown_features(cfg: PipelineConfig, spark, n_users: int, n_days: int, target_users: int, n_files: int):
    """A training set of a synthetic log of ``n_users`` x ``n_days`` (for a champion) and the features of the
    cutoff after it grown to ~``target_users`` users (replicate_features): (training set info, cutoff, the
    features job's report, the number of files the job wrote, user rows)."""
    from spark_jobs import features

    info, _ = build_synthetic_training_set(cfg, spark, n_users, n_days)
    ds = cfg.generator.start + dt.timedelta(days=n_days)
    feats = features.run(cfg, ds, spark=spark)
    job_files = len(list(feats.path.glob("*.parquet")))
    return info, ds, feats, job_files, replicate_features(cfg, ds, target_users, n_files=n_files)


def real_exports() -> list[tuple[str, dict, Path | None]]:
    """(name, ``tasks.backtest`` arguments, resolved input or None when absent) of each entry of
    bench/backtests.yaml."""
    import yaml

    out = []
    for key, spec in (yaml.safe_load(BACKTESTS.read_text()) or {}).items():
        path = (REPO_ROOT / spec["input"]).resolve()
        out.append((key, spec, path if path.exists() else None))
    return out


def backtest(cfg: PipelineConfig, work: Path, name: str, args: dict, extra: list[str]) -> dict:
    """One ``python -m tasks.backtest`` (its ``main``, arguments as on the command line) with exactly ``cfg``
    (its MLflow store under the bench's work dir) in ``work/<name>``; returns report.json's content."""
    import json

    from tasks.backtest import main

    config = work / f"{name}.pipeline.json"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    argv = [f"--{k}={v}" for k, v in args.items()] + ["--config", str(config), "--work-dir", str(work / name), *extra]
    print(f"  python -m tasks.backtest {' '.join(argv)}", flush=True)
    return main(argv)
