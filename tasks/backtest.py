"""``python -m tasks.backtest``: every candidate model family against the yardsticks, on your own export.

    python -m tasks.backtest --source taobao --input ../shared/data/taobao_userbehavior_sample.csv \\
        --train 2017-11-26:2017-11-29 --val 2017-11-30 --test 2017-12-01 --candidates lr,lightgbm,lstm,bert --seeds 3

The real stages run in an isolated work dir (``--work-dir``; data layers, training sets and the runs' files
there, nothing of the pipeline's own ``var/`` touched): land the export, clean it (Spark), check that the
cutoffs lie inside the data and their label windows have closed, build the training set (Spark), validate it
(Great Expectations; a failed suite stops the backtest), then train every candidate with every seed exactly
as the training DAG does (``tasks.training.launcher.launch``: torchrun for the sequence families, calibrated
on validation, logged to MLflow without registering), and predict the test split with each packaged model as
scoring loads it. ``tasks.backtest_report`` judges the predictions; the report lands in ``--out``:
report.md, report.json, curves.png, predictions_users.parquet and predictions_pairs.parquet. Everything is
also one MLflow parent run (experiment ``<mlflow.experiment>_backtest``) with every training nested under it.

The terminal gets one line per stage; the stages' own output goes to ``<work dir>/backtest.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from tasks.backtest_report import NO_TEXT, PRETRAINED
from tasks.config import PipelineConfig, add_common_args, config_from_args, with_overrides
from tasks.cutoffs import CutoffPlan, plan_cutoffs
from tasks.errors import REASON_FILE_ENV, DataError, read_reason, run_cli
from tasks.models.base import model_class, model_types
from tasks.process import run_step

# The business day of public datasets whose documentation names one (their day boundaries); any other source
# uses pipeline.timezone unless --timezone says otherwise.
DATASET_TIMEZONES = {"taobao": "Asia/Shanghai"}
TRAINING_SET_ID = "backtest"
STAGES = ("land", "clean", "check data", "training set", "validate", "train", "predict", "report")


class BacktestError(DataError, ValueError):
    """The backtest cannot run as asked (a bad range, cutoffs outside the data, a stage that failed)."""


@dataclass(frozen=True)
class DayRange:
    first: dt.date
    last: dt.date

    @property
    def days(self) -> tuple[dt.date, ...]:
        return tuple(self.first + dt.timedelta(days=i) for i in range((self.last - self.first).days + 1))

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


def parse_range(text: str) -> DayRange:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD:YYYY-MM-DD`` (inclusive)."""
    parts = text.split(":")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD or FIRST:LAST")
    try:
        first, last = (dt.date.fromisoformat(p.strip()) for p in (parts[0], parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD or FIRST:LAST") from None
    if last < first:
        raise argparse.ArgumentTypeError(f"{text!r}: the range ends before it starts")
    return DayRange(first, last)


def plan_backtest(train: DayRange, val: DayRange, test: DayRange, horizon_days: int) -> CutoffPlan:
    """The cutoff plan of the three ranges, or why they cannot be one: splits in time order, each starting
    ``horizon_days`` after the previous one ends (the cutoffs in between are left out, so no split's labels
    overlap the next split's cutoffs: the layout of ``tasks.cutoffs.plan_cutoffs``)."""
    if horizon_days < 1:
        raise BacktestError(f"--horizon must be at least 1 day, got {horizon_days}")
    if not train.last < val.first:
        raise BacktestError(f"validation {val} must come after train {train}")
    if not val.last < test.first:
        raise BacktestError(
            f"test {test} must come after validation {val}"
            + (f" and train {train}" if test.first <= train.last else "")
        )
    for name, before, after in (("validation", train, val), ("test", val, test)):
        expected = before.last + dt.timedelta(days=horizon_days)
        if after.first != expected:
            gap = "" if horizon_days == 1 else f" (the {horizon_days - 1} cutoff(s) between are left out)"
            raise BacktestError(
                f"{name} starts {after.first}; with a {horizon_days}-day label horizon it must start {expected}, "
                f"{horizon_days} day(s) after the previous split ends {before.last}{gap}"
            )
    dropped = tuple(d for a, b in ((train, val), (val, test)) for d in DayRange(a.last, b.first).days[1:-1])
    return CutoffPlan(train=train.days, val=val.days, test=test.days, dropped=dropped)


def work_config(
    base: PipelineConfig, work: Path, plan: CutoffPlan, *, source: str, timezone: str, horizon_days: int
) -> PipelineConfig:
    """``base`` with every data path under ``work``, the backtest's splits, source, zone and horizon; MLflow
    stays the configured store (the runs are worth keeping) in an experiment of its own."""
    cfg = with_overrides(
        base,
        {
            "pipeline": {"source": source, "timezone": timezone},
            "paths": {"var_dir": str(work / "var"), "incoming_dir": str(work / "incoming")},
            "warehouse": {"url": f"duckdb:///{work / 'var' / 'warehouse.duckdb'}"},
            "features": {"horizon_days": horizon_days},
            "training_set": {
                "n_train_cutoffs": len(plan.train),
                "n_val_cutoffs": len(plan.val),
                "n_test_cutoffs": len(plan.test),
            },
            # The backtest trains and reports every seed itself, and their ensemble.
            "training": {"search": {"enabled": False}, "ensemble_seeds": 1},
            "mlflow": {"experiment": f"{base.mlflow.experiment}_backtest"},
        },
    )
    if plan_cutoffs(cfg, plan.last) != plan:
        raise AssertionError(f"cutoff plan {plan} differs from the config's {plan_cutoffs(cfg, plan.last)}")
    return cfg


class Console:
    """One line per stage on the terminal; while a stage runs, everything written to fds 1 and 2 (this
    process's logging, torchrun's children) goes to the log file instead."""

    def __init__(self, log_path: Path, n_stages: int = len(STAGES)):
        self.log_path = log_path
        self.n_stages = n_stages
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_path.open("a", buffering=1)
        self.out: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
        self.n = 0

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @contextlib.contextmanager
    def stage(self, title: str) -> Iterator[dict[str, str]]:
        self.n += 1
        head = f"[{self.n}/{self.n_stages}] {title}"
        self.say(f"{head} ...")
        print(f"===== {head}", file=self.log_file, flush=True)
        started = time.perf_counter()
        result: dict[str, str] = {}
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(self.log_file.fileno(), 1)
        os.dup2(self.log_file.fileno(), 2)
        try:
            yield result
            result.setdefault("done", "done")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            took = time.perf_counter() - started
            self.say(f"{head}: {result.get('done', 'FAILED')} ({took:.0f}s)")

    def close(self) -> None:
        self.log_file.close()
        self.out.close()


def _run(cfg: PipelineConfig, console: Console, module: str, *args: str) -> str:
    """A step's CLI in its own process, its output to the log; a failure raises with the step's own reason."""
    with tempfile.TemporaryDirectory(prefix="backtest-step-") as tmp:
        reason_file = Path(tmp) / "reason"
        saved = os.environ.get(REASON_FILE_ENV)
        os.environ[REASON_FILE_ENV] = str(reason_file)
        try:
            done = run_step(cfg, module, *args, stderr=console.log_file)
        finally:
            if saved is None:
                os.environ.pop(REASON_FILE_ENV, None)
            else:
                os.environ[REASON_FILE_ENV] = saved
        console.log_file.write(done.stdout)
        if done.returncode != 0:
            found = read_reason(reason_file)
            docs = f"; Data Docs: {found['data_docs']}" if found and found.get("data_docs") else ""
            why = f": {found['reason']}" if found else ""
            raise BacktestError(f"{module} exited with code {done.returncode}{why}{docs}; see {console.log_path}")
    return done.stdout


def land(cfg: PipelineConfig, source: str, input_path: Path, days: tuple[dt.date, ...]) -> tuple[str, list[str]]:
    """Land the export: one file (any days; cleaned as an import) or a folder of ``dt=YYYY-MM-DD`` day folders
    (those of the days needed). Returns what was landed and the arguments that clean it."""
    from tasks.land import land_file, land_folder

    if input_path.is_file():
        raw_day = days[-1]
        report = land_file(cfg, source, input_path, raw_day)
        clean = ["--import", str(raw_day), "--from", str(days[0]), "--to", str(days[-1])]
        return f"{input_path.name}: {report.n_bytes:,} bytes", clean
    if not input_path.is_dir():
        raise BacktestError(f"--input {input_path} does not exist")
    folders = {d: input_path / f"dt={d.isoformat()}" for d in days}
    present = [d for d, f in folders.items() if f.is_dir()]
    if not present:
        raise BacktestError(
            f"--input {input_path} holds no dt=YYYY-MM-DD folder for {days[0]}..{days[-1]}: give an export file or "
            "a folder of day folders"
        )
    n_bytes = sum(land_folder(cfg, source, folders[d], d).n_bytes for d in present)
    # The days before the export's first one have nothing to clean; check_data names any gap that matters.
    return f"{len(present)} day folders, {n_bytes:,} bytes", ["--from", str(present[0]), "--to", str(present[-1])]


def check_data(cfg: PipelineConfig, plan: CutoffPlan) -> str:
    """The cutoffs lie inside the cleaned data and the test split's label window has closed."""
    from tasks.availability import event_days, missing_training_events

    present = event_days(cfg)
    if not present:
        raise BacktestError("the export holds no events in the backtest's days after cleaning")
    h = cfg.features.horizon_days
    label_end = plan.last + dt.timedelta(days=h - 1)
    if label_end > present[-1]:
        raise BacktestError(
            f"the label window of the test cutoff {plan.last} ({h} day(s)) has not passed: it needs events through "
            f"{label_end}, the data ends {present[-1]}; choose a test cutoff up to "
            f"{present[-1] - dt.timedelta(days=h - 1)}"
        )
    if plan.first <= present[0]:
        raise BacktestError(
            f"the first train cutoff {plan.first} has no history before it: the data starts {present[0]}; "
            f"start training at {present[0] + dt.timedelta(days=1)} or later"
        )
    if reason := missing_training_events(cfg, plan.last):
        raise BacktestError(reason)
    return f"events {present[0]}..{present[-1]}"


@dataclass
class Trained:
    model_type: (
        str  # the family, with PRETRAINED appended when it started from a pretrained encoder, NO_TEXT without text
    )
    seed: int
    run_id: str
    wall_s: float


def train_all(
    cfg: PipelineConfig,
    console: Console,
    ts_dir: Path,
    candidates: list[str],
    seeds: list[int],
    epochs: int | None,
    parent_run_id: str,
    encoders: dict[str, str] | None = None,
    without_text: list[str] | None = None,
) -> list[Trained]:
    """Every candidate with every seed from fresh weights, a family with a pretrained encoder in ``encoders``
    (family -> models:/ URI) once more from that encoder (labelled ``<family>-pretrained``), and each family of
    ``without_text`` once more without reading text (``<family>-notext``), all on the same training set."""
    from tasks.training.launcher import launch

    encoders = encoders or {}
    runs = [(m, None, True) for m in candidates] + [(m, encoders[m], True) for m in candidates if m in encoders]
    runs += [(m, None, False) for m in without_text or []]
    trained = []
    total = len(runs) * len(seeds)
    for model_type, init_from, text in runs:
        label = model_type + (PRETRAINED if init_from else "") + ("" if text else NO_TEXT)
        for seed in seeds:
            started = time.perf_counter()
            overrides: dict[str, Any] = {"training": {"seed": seed, "init_from": init_from}}
            if not text:
                overrides["text"] = {"enabled": False}
            res = launch(
                with_overrides(cfg, overrides),
                ts_dir,
                model_type=model_type,
                epochs=epochs,
                search=False,
                register=False,
                parent_run_id=parent_run_id,
            )
            wall = time.perf_counter() - started
            trained.append(Trained(label, seed, res.run_id, wall))
            console.say(f"      {len(trained)}/{total} {label} seed {seed}: run {res.run_id} ({wall:.0f}s)")
    return trained


def pretrain_all(cfg: PipelineConfig, console: Console, ts_dir: Path, families: list[str]) -> dict[str, Any]:
    """A masked-event pretrained encoder per family (``tasks.pretrain``) on the training set: family -> its URI,
    run, held-out metrics and wall seconds."""
    from tasks.pretrain import launch_pretrain

    encoders = {}
    for family in families:
        started = time.perf_counter()
        res = launch_pretrain(with_overrides(cfg, {"pretrain": {"model_type": family}}), ts_dir)
        wall = time.perf_counter() - started
        encoders[family] = {"model_uri": res.model_uri, "run_id": res.run_id, "metrics": res.metrics, "wall_s": wall}
        acc = ", ".join(
            f"{k.removeprefix('holdout_acc_')} {v:.3f}" for k, v in res.metrics.items() if "holdout_acc" in k
        )
        console.say(f"      {family}: {res.model_uri} (held-out masked-event accuracy {acc}; {wall:.0f}s)")
    return encoders


def predict_all(cfg: PipelineConfig, ts_dir: Path, trained: list[Trained]):
    """The test split and every model's predictions on it: each seed, each family's seed ensemble, the
    heuristic."""
    from tasks.backtest_report import ENSEMBLE, HEURISTIC, SINGLE, ModelPredictions, TestSplit, recency_heuristic
    from tasks.models.calibration import CalibratedPredictor
    from tasks.schema import CANDIDATE_CATEGORY_COLUMN, INTENTS
    from tasks.training.data import read_manifest, split_categories
    from tasks.training.ensemble import load_run_predictor
    from tasks.training.tabular import predict_split, read_split

    manifest = read_manifest(ts_dir)
    split = read_split(cfg, ts_dir, "test", manifest)
    cand_category = split.cand[CANDIDATE_CATEGORY_COLUMN].astype(str).to_numpy()
    test = TestSplit(
        users=split.users[["user_id", "ds"]].astype({"user_id": str, "ds": str}),
        y=split.labels,
        cand_rows=split.cand_rows,
        cand_category=cand_category,
        cand_y=split.cand_labels.astype(np.int64),
        cand_unseen=~np.isin(cand_category, sorted(split_categories(ts_dir, "train"))),
    )
    preds, raw_purchase = [], []
    for t in trained:
        predictor = load_run_predictor(cfg, t.run_id)
        raw = predictor.inner if isinstance(predictor, CalibratedPredictor) else predictor
        p, cand_p = predict_split(predictor, split)
        p_raw = predict_split(raw, split)[0][:, 0] if raw is not predictor else p[:, 0]
        preds.append(ModelPredictions(t.model_type, SINGLE, t.seed, p, cand_p, p_raw, t.run_id))
        raw_purchase.append(p_raw)
    for fam in dict.fromkeys(t.model_type for t in trained):
        own = [i for i, q in enumerate(preds) if q.model == fam]
        if len(own) > 1:
            preds.append(
                ModelPredictions(
                    fam,
                    ENSEMBLE,
                    None,
                    np.mean([preds[i].p for i in own], axis=0),
                    np.mean([preds[i].cand_p for i in own], axis=0),
                    np.mean([raw_purchase[i] for i in own], axis=0),
                    extra={"seeds": len(own)},
                )
            )
    hp, hc = recency_heuristic(split.users, split.cand, len(INTENTS))
    preds.insert(0, ModelPredictions(HEURISTIC, HEURISTIC, None, hp, hc))
    return test, preds, manifest


def selection(cfg: PipelineConfig, trained: list[Trained], seed: int) -> dict[str, Any]:
    """What ``training.selection`` picks on validation among the candidates trained with ``seed`` (the training
    DAG's seed): the family the gate would then judge."""
    from tasks.registry import choose, mlflow_store, read_candidate

    # As in the training DAG with pretraining on, a family with a pretrained variant competes with that one only;
    # the variants without text are there to be compared, not chosen.
    pretrained = {t.model_type.removesuffix(PRETRAINED) for t in trained if t.model_type.endswith(PRETRAINED)}
    competing = [
        t for t in trained if t.seed == seed and t.model_type not in pretrained and not t.model_type.endswith(NO_TEXT)
    ]
    with mlflow_store(cfg) as client:
        cands = [read_candidate(client, t.run_id)[0] for t in competing]
    s = cfg.training.selection
    chosen, reason = choose(cands, s.metric, s.tie_break, s.tie_margin)
    label = next(t.model_type for t in competing if t.run_id == chosen.run_id)
    return {"model": label, "run_id": chosen.run_id, "reason": reason}


def split_facts(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in ("train", "val", "test"):
        rows = int(manifest["rows"][s])
        rate = float(manifest["positive_rate"][s]["label_purchase"])
        out[s] = {
            "rows": rows,
            "buyers": round(rows * rate),
            "purchase_rate": rate,
            "candidate_rows": int(manifest["user_category"]["rows"][s]),
        }
    return out


def run_backtest(
    base: PipelineConfig,
    *,
    source: str,
    input_path: Path,
    plan: CutoffPlan,
    horizon_days: int,
    timezone: str,
    candidates: list[str],
    seeds: int,
    work: Path,
    out: Path,
    epochs: int | None = None,
    resamples: int = 1000,
    command: str = "",
    ensemble_size: int | None = None,
    pretrain: list[str] | None = None,
    without_text: list[str] | None = None,
) -> dict[str, Any]:
    """The whole backtest (module doc); returns report.json's content. ``ensemble_size``: also report how stable
    ensembles of that many seeds are (disjoint seed groups against single seeds). ``pretrain``: candidate torchrun
    families that also train from a masked-event encoder pretrained on the training set (``<family>-pretrained``).
    ``without_text``: candidate torchrun families that also train without reading text (``<family>-notext``)."""
    import mlflow

    from tasks import backtest_report as rep
    from tasks.layers import events_root
    from tasks.registry import mlflow_store
    from tasks.run_summary import mlflow_run_url
    from tasks.training.tracking import ensure_experiment

    if work.exists() and any(work.iterdir()):
        raise BacktestError(f"work dir {work} is not empty: give a new one (a backtest never reuses old layers)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BacktestError(f"report folder {out} exists and is not empty: give a new one")
    cfg = work_config(base, work, plan, source=source, timezone=timezone, horizon_days=horizon_days)
    h, t = cfg.features.horizon_days, cfg.training
    first_day = plan.first - dt.timedelta(days=cfg.features.lookback_days)
    last_day = plan.last + dt.timedelta(days=h - 1)
    seed_list = [t.seed + i for i in range(seeds)]
    # --pretrain adds a stage before training.
    console = Console(work / "backtest.log", len(STAGES) + bool(pretrain))
    console.say(f"backtest in {work} (log: {console.log_path})")
    with mlflow_store(cfg) as client:
        exp_id = ensure_experiment(cfg, client)
        parent = client.create_run(
            exp_id,
            run_name=f"backtest-{source}-{plan.last}",
            tags={"backtest": "true", "source": source, "input": str(input_path), "command": command},
        )
    parent_id = parent.info.run_id
    status = "FAILED"
    try:
        with console.stage("land") as r:
            r["done"], clean_args = land(cfg, source, input_path, DayRange(first_day, last_day).days)
        with console.stage("clean (Spark)") as r:
            _run(cfg, console, "spark_jobs.clean_events", *clean_args, "--source", source)
            r["done"] = "events layer written"
        with console.stage("check data") as r:
            r["done"] = check_data(cfg, plan)
        with console.stage("training set (Spark)") as r:
            ts_dir = Path(
                _run(
                    cfg, console, "spark_jobs.training_set", "--last-cutoff", str(plan.last), "--id", TRAINING_SET_ID
                ).strip()
            )
            from tasks.training.data import read_manifest

            facts = split_facts(read_manifest(ts_dir))
            r["done"] = ", ".join(f"{s} {d['rows']} user-days ({d['buyers']} buyers)" for s, d in facts.items())
        with console.stage("validate (Great Expectations)") as r:
            _run(cfg, console, "spark_jobs.validate", "training_set", "--training-set-id", TRAINING_SET_ID)
            r["done"] = "passed"
        encoders = {}
        if pretrain:
            with console.stage(f"pretrain {', '.join(pretrain)} (masked events)") as r:
                encoders = pretrain_all(cfg, console, ts_dir, pretrain)
                r["done"] = ", ".join(e["model_uri"] for e in encoders.values())
        with console.stage(f"train {', '.join(candidates)} x {seeds} seed(s)") as r:
            uris = {family: e["model_uri"] for family, e in encoders.items()}
            trained = train_all(cfg, console, ts_dir, candidates, seed_list, epochs, parent_id, uris, without_text)
            r["done"] = f"{len(trained)} models"
        with console.stage("predict the test split with every packaged model") as r:
            split, preds, manifest = predict_all(cfg, ts_dir, trained)
            r["done"] = f"{len(preds)} models x {len(split.users)} user-days"
        with console.stage("report") as r:
            # Written next to --out and renamed into place: a report is there whole or not at all.
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            report = _report(
                cfg,
                split,
                preds,
                manifest,
                trained,
                facts,
                tmp,
                resamples=resamples,
                seed=seed_list[0],
                command=command,
                ensemble_size=ensemble_size,
            )
            report.update(source=source, input=str(input_path), timezone=timezone, horizon_days=h, pretrained=encoders)
            # Where the work dir's layers are, for a study of the same data (bench feature_ablation).
            report["layers"] = {"events": str(events_root(cfg)), "training_set": str(ts_dir)}
            report["mlflow"] = {"parent_run_id": parent_id, "url": mlflow_run_url(cfg, parent_id, exp_id)}
            rep.write_json(tmp / "report.json", report)
            (tmp / "report.md").write_text(rep.markdown(report))
            if out.exists():
                out.rmdir()
            tmp.rename(out)
            with mlflow_store(cfg), mlflow.start_run(run_id=parent_id):
                for row in report["models"]:
                    if row["headline"]:  # one per family (its seed ensemble when it has several seeds)
                        mlflow.log_metrics(
                            {
                                f"{row['model']}/{k}": v
                                for k, v in row["metrics"].items()
                                if isinstance(v, float) and np.isfinite(v)
                            }
                        )
                for name in report["files"]:
                    mlflow.log_artifact(str(out / name), "report")
                mlflow.set_tag("selected", (report.get("selection") or {}).get("model", ""))
            r["done"] = f"{out / 'report.md'}"
        status = "FINISHED"
        return report
    finally:
        with mlflow_store(cfg) as client:
            client.set_terminated(parent_id, status=status)
        console.close()


def _report(
    cfg: PipelineConfig,
    split: Any,
    preds: list[Any],
    manifest: dict[str, Any],
    trained: list[Trained],
    facts: dict[str, Any],
    out: Path,
    *,
    resamples: int,
    seed: int,
    command: str,
    ensemble_size: int | None,
) -> dict[str, Any]:
    from tasks import backtest_report as rep

    t = cfg.training
    k, top = t.category_eval_k, t.top_k_fraction
    out.mkdir(parents=True, exist_ok=True)
    metrics = {p.label: rep.model_metrics(split, p, k=k, top_k_fraction=top) for p in preds}
    comparisons, intervals = rep.compare(split, preds, metrics, k=k, resamples=resamples, seed=seed)
    heads = {p.label for p in rep.headline(preds)}
    rows = [
        {
            "label": p.label,
            "model": p.model,
            "kind": p.kind,
            "seed": p.seed,
            "run_id": p.run_id,
            "headline": p.label in heads,
            "metrics": metrics[p.label],
        }
        for p in preds
    ]
    users, pairs = rep.predictions_frames(split, preds)
    users.to_parquet(out / "predictions_users.parquet", index=False)
    pairs.to_parquet(out / "predictions_pairs.parquet", index=False)
    fig = rep.curves_figure(split, preds)
    fig.savefig(out / "curves.png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    pct = round(top * 100)
    return {
        "command": command,
        "k": k,
        "top_k_percent": pct,
        "cutoffs": manifest["cutoffs"],
        "negative_sample_rate": manifest["negative_sample_rate"],
        "data": facts,
        "candidates": list(dict.fromkeys(x.model_type for x in trained)),
        "seeds": sorted({x.seed for x in trained}),
        "selection": selection(cfg, trained, min(x.seed for x in trained)),
        "models": rows,
        "intervals": intervals,
        "bootstrap": {
            "resamples": resamples,
            "unit": "user",
            "yardsticks": [
                p.label for p in rep.headline(preds) if p.kind == rep.HEURISTIC or p.model in rep.YARDSTICK_FAMILIES
            ],
            "comparisons": comparisons,
        },
        "seed_spread": rep.seed_spread(
            rows, ("roc_auc", "pr_auc", "ece", f"recall_top_{pct}pct", "ndcg", "hit_rate", "pair_roc_auc")
        ),
        "ensemble_stability": rep.ensemble_stability(split, preds, ensemble_size, k=k, top_k_fraction=top)
        if ensemble_size
        else [],
        "training_runs": [x.__dict__ for x in trained],
        "files": {
            "report.md": "this report",
            "report.json": "every figure of this report",
            "curves.png": "ROC, precision-recall and calibration curves of the purchase head",
            "predictions_users.parquet": "per user-day and model: labels and p_purchase / p_cart / p_fav (test)",
            "predictions_pairs.parquet": "per candidate pair and model: label and probability (test)",
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--source", required=True, help="export format: synthetic | taobao | rees46 | retailrocket")
    parser.add_argument(
        "--input", required=True, type=Path, help="the export: one file, or a folder of dt=YYYY-MM-DD day folders"
    )
    parser.add_argument("--train", required=True, type=parse_range, help="train cutoffs FIRST:LAST")
    parser.add_argument("--val", required=True, type=parse_range, help="validation cutoff(s) DAY or FIRST:LAST")
    parser.add_argument("--test", required=True, type=parse_range, help="test cutoff(s) DAY or FIRST:LAST")
    parser.add_argument(
        "--candidates",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        help="comma-separated model families (default: training.candidates)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per candidate: training.seed, +1, ... (default 1)")
    parser.add_argument("--horizon", type=int, help="label horizon in days (default: features.horizon_days)")
    parser.add_argument(
        "--timezone", help="business time zone of the days (default: the dataset's own, else pipeline.timezone)"
    )
    parser.add_argument("--epochs", type=int, help="max epochs of the torchrun families (default: training.epochs)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument(
        "--ensemble-size",
        type=int,
        help="also compare the spread of single seeds with that of ensembles of this many seeds (needs --seeds of at "
        "least twice it: disjoint seed groups)",
    )
    parser.add_argument(
        "--pretrain",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=[],
        help="comma-separated torchrun candidates that also train from a masked-event encoder pretrained on the "
        "training set's train rows (reported as <family>-pretrained)",
    )
    parser.add_argument(
        "--without-text",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=[],
        help="comma-separated torchrun candidates that also train without reading text, on the same training set "
        "(reported as <family>-notext)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="new or empty folder (default: <paths.var_dir>/backtests/<source>-<time>)"
    )
    parser.add_argument("--out", type=Path, help="report folder (default: <work dir>/report)")
    args = parser.parse_args(argv)
    base = config_from_args(args)
    candidates = args.candidates or list(base.training.candidates)
    unknown = [c for c in candidates if c not in model_types()]
    if unknown or len(set(candidates)) != len(candidates) or not candidates:
        parser.error(f"--candidates {','.join(candidates)}: give distinct families among {', '.join(model_types())}")
    if args.seeds < 1 or args.bootstrap < 100:
        parser.error("--seeds must be >= 1 and --bootstrap >= 100")
    if args.ensemble_size is not None and not 1 <= args.ensemble_size <= args.seeds // 2:
        parser.error(f"--ensemble-size {args.ensemble_size}: needs 1 <= size <= --seeds / 2 (two disjoint groups)")
    for option, families in (("--pretrain", args.pretrain), ("--without-text", args.without_text)):
        wrong = [f for f in families if f not in candidates or model_class(f).trainer != "torchrun"]
        if wrong:
            parser.error(f"{option} {','.join(wrong)}: give torchrun families among the candidates")
    if args.without_text and not base.text.enabled:
        parser.error("--without-text compares with the families reading text: it needs text.enabled")
    horizon = args.horizon if args.horizon is not None else base.features.horizon_days
    plan = plan_backtest(args.train, args.val, args.test, horizon)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    work = (args.work_dir or base.paths.var / "backtests" / f"{args.source}-{stamp}").resolve()
    report = run_backtest(
        base,
        source=args.source,
        input_path=args.input.resolve(),
        plan=plan,
        horizon_days=horizon,
        timezone=args.timezone or DATASET_TIMEZONES.get(args.source, base.pipeline.timezone),
        candidates=candidates,
        seeds=args.seeds,
        work=work,
        out=(args.out or work / "report").resolve(),
        epochs=args.epochs,
        resamples=args.bootstrap,
        ensemble_size=args.ensemble_size,
        pretrain=args.pretrain,
        without_text=args.without_text,
        command="python -m tasks.backtest " + shlex.join(argv if argv is not None else sys.argv[1:]),
    )
    print((args.out or work / "report").resolve() / "report.md")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main))
