"""bench pii_scrub_overhead: what scrubbing personal data from free text (cleaning.pii_patterns) adds to the
cleaning of one raw day, measured against the same cleaning with every pattern switched off."""

from __future__ import annotations

import argparse
import statistics

from bench.data import EVENTS_PER_USER_DAY
from bench.harness import cpu_timed, r, spark_session, workdir
from tasks.layers import events_partition
from tests.helpers.config import isolated_config

VARIANTS = ("pii_patterns as configured", "pii_patterns switched off")


def run(args: argparse.Namespace) -> dict:
    from spark_jobs.clean_events import clean_day
    from tasks.land import land_day
    from tasks.sources.synthetic import generate

    with workdir("pii") as work:
        cfg = isolated_config(work / "var")
        off = cfg.model_copy(update={"cleaning": cfg.cleaning.model_copy(update={"pii_patterns": {}})})
        target = 20_000 if args.quick else 1_000_000
        n_users = max(50, round(target * args.scale / EVENTS_PER_USER_DAY))
        gen = cfg.generator.model_copy(update={"n_users": n_users, "n_days": 1})
        generate(gen, cfg.paths.incoming / cfg.pipeline.source, tz=cfg.pipeline.timezone)
        day = gen.start
        land_day(cfg, day)
        spark = spark_session(cfg)
        clean_day(spark, cfg, day)  # JVM warm-up and first-call compilation, not timed
        reps = 1 if args.quick else 3
        runs: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        reports = {}
        # Interleaved, so a burst of load on the shared machine hits both variants alike.
        for _ in range(reps):
            for variant, c in zip(VARIANTS, (cfg, off), strict=True):
                reports[variant], wall, cpu = cpu_timed(lambda c=c: clean_day(spark, c, day), spark)
                runs[variant].append((wall, cpu))
        n_query = spark.read.parquet(str(events_partition(cfg, day))).where("query is not null").count()
    med = {v: (statistics.median(w for w, _ in x), statistics.median(c for _, c in x)) for v, x in runs.items()}
    (on_wall, on_cpu), (off_wall, off_cpu) = med[VARIANTS[0]], med[VARIANTS[1]]
    report = reports[VARIANTS[0]]
    table = [
        {
            "variant": v,
            "wall s": r(med[v][0]),
            "CPU s": r(med[v][1]),
            "wall ratio": f"x{med[v][0] / off_wall:.2f}",
            "CPU ratio": f"x{med[v][1] / off_cpu:.2f}",
        }
        for v in VARIANTS
    ]
    notes = [
        f"One synthetic raw day: {report.n_raw} raw rows, {n_query} events with a search query; "
        f"patterns: {', '.join(cfg.cleaning.pii_patterns)} (rows they changed: {report.scrubbed or 'none'}).",
        f"clean_day in one warm Spark session ({cfg.spark.master}), median of {reps} interleaved runs; CPU = "
        "Python + Spark JVM. Scrubbing runs every pattern over query, brand and category_code of every row "
        "once, before the rows are counted; every column of a malformed line as the quarantine is written (none here).",
        f"Scrubbing adds {100 * (on_wall / off_wall - 1):+.0f}% wall and {100 * (on_cpu / off_cpu - 1):+.0f}% CPU "
        "to cleaning the day.",
    ]
    return {
        "description": "cleaning one raw day with and without the personal-data scrub (cleaning.pii_patterns).",
        "table": table,
        "notes": notes,
        "runs": {v: [{"wall_s": w, "cpu_s": c} for w, c in x] for v, x in runs.items()},
        "raw_rows": report.n_raw,
        "query_rows": n_query,
    }
