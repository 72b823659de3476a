"""bench text_step_cost: the nightly text step (``spark_jobs.text_embeddings.embed_day``, the DAG's ``embed_texts``)
on days of the synthetic log at the nightly benchmark's scale (issue 26.2): distinct texts per day, how many are
new, seconds, and its share of a nightly run.

Three consecutive days, each encoded as its night would: the first into an empty layer (every text is new, as on
the first night of a deployment), then each next one with the days before it in the layer (only its new texts
are encoded). One Spark session in local mode, as the DAG's spark-submit runs it; the encoder loads once per
Python worker and is counted in the time."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from bench.data import link_events, synthetic_events
from bench.harness import RESULTS, r, timed, workdir
from spark_jobs.session import build_session
from spark_jobs.text_embeddings import embed_day
from tests.helpers.config import isolated_config

N_DAYS = 3


def run(args: argparse.Namespace) -> dict:
    n_users = 2000 if args.quick else max(1000, round(100_000 * args.scale))
    table = []
    with workdir("text-step") as work:
        cfg = isolated_config(work / "var")
        layer, n_events = synthetic_events(cfg, n_users, N_DAYS)
        link_events(cfg, layer)
        spark = build_session(cfg, "bench-text-step")
        try:
            for i in range(N_DAYS):
                day = cfg.generator.start + dt.timedelta(days=i)
                report, wall = timed(lambda day=day: embed_day(spark, cfg, day))
                table.append(
                    {
                        "day": day.isoformat(),
                        "layer holds": f"{i} earlier day(s)",
                        "distinct texts": report.n_texts,
                        "new texts encoded": report.n_new,
                        "encode s": r(report.encode_s, 1),
                        "step s": r(wall, 1),
                        "new texts/s": round(report.n_new / report.encode_s) if report.encode_s else None,
                    }
                )
        finally:
            spark.stop()
    notes = [
        f"Synthetic log of {n_users} users, {N_DAYS} days, {n_events} events ({n_events // N_DAYS} a day; bench "
        "nightly_at_scale runs 100000 users); the texts are each event's query, category code and brand, normalised.",
        "step s: the whole embed_day (reading the day's events, finding the texts the layer lacks, encoding them on "
        "the Python workers, writing the partition); encode s: from the first Spark action of the encoding to the "
        "written partition.",
    ]
    nightly = RESULTS / "nightly_at_scale.json"
    measured = json.loads(nightly.read_text()) if nightly.is_file() else {}
    if measured.get("text_step_share") is not None:
        night = measured["nights"][-1]
        notes.append(
            f"Share of a nightly run: in bench/results/nightly_at_scale.json (the whole nightly DAG through Airflow "
            f"on 100000 users, a separate run), the measured night's embed_texts took "
            f"{night['tasks']['embed_texts']['wall_s']:.0f} s of the run's {night['run_s']:.0f} s "
            f"({100 * measured['text_step_share']:.1f}%)."
        )
    elif measured:
        whole = next(row for row in measured["table"] if row["task"] == "whole run")["wall s"]
        steady = table[-1]["step s"]
        notes.append(
            f"Share of a nightly run: {steady} s against the {whole} s of the whole nightly run in "
            f"bench/results/nightly_at_scale.json (a separate run on this machine, before the text step existed) is "
            f"{100 * steady / (whole + steady):.1f}% if it ran alone; in the DAG it runs beside build_features, so "
            "the night's wall time grows by less."
        )
    return {
        "description": "The nightly text step on a day of the synthetic log at nightly scale: distinct and new texts, "
        "seconds, share of the nightly run.",
        "table": table,
        "notes": notes,
        "users": n_users,
        "events": n_events,
    }
