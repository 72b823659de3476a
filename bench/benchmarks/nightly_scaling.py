"""bench nightly_scaling: the whole nightly DAG through Airflow at ~1M and ~10M lookback events, each task's wall
time per million events and how it grows between the two sizes: the measured inputs of docs/scaling.md (issue 28.5).
"""

from __future__ import annotations

import argparse
import json
import math

from bench.data import EVENTS_PER_USER_DAY
from bench.harness import RESULTS, r
from bench.nightly import NIGHTLY_DAG, busy_s, measure_nights, seconds

# Lookback events of the two sizes at --scale 1.
SIZES = (1_000_000, 10_000_000)
LOOKBACK_DAYS = 30


def _task_walls(night: dict) -> dict[str, float]:
    return {
        t["task_id"]: wall
        for t in night["tasks"]
        if t["state"] == "success" and (wall := seconds(t["start_date"], t["end_date"])) is not None
    }


def run(args: argparse.Namespace) -> dict:
    sizes = (20_000, 200_000) if args.quick else tuple(int(s * args.scale) for s in SIZES)
    points = []
    for target in sizes:
        n_users = max(100, round(target / (EVENTS_PER_USER_DAY * LOOKBACK_DAYS)))
        m = measure_nights(n_users, args.quick)
        night = m.nights[-1]
        walls = _task_walls(night)
        walls["(scheduling gaps)"] = night["run_s"] - busy_s(night["tasks"])
        walls["whole run"] = night["run_s"]
        points.append(
            {"users": n_users, "events": m.lookback_rows, "bytes": m.lookback_bytes, "scored": m.scored, "walls": walls}
        )
    small, large = points
    m_small, m_large = small["events"] / 1e6, large["events"] / 1e6
    # The line's check against the largest size measured (nightly_at_scale's latest result, another run).
    at_scale = json.loads(path.read_text()) if (path := RESULTS / "nightly_at_scale.json").is_file() else None
    m_scale = at_scale["lookback_rows"] / 1e6 if at_scale else None
    measured_scale = (
        {task: v["wall_s"] for task, v in at_scale["nights"][-1]["tasks"].items() if v["wall_s"]}
        | {"whole run": at_scale["nights"][-1]["run_s"]}
        if at_scale
        else {}
    )
    table = []
    for task, t_small in small["walls"].items():
        t_large = large["walls"].get(task)
        if t_large is None:
            continue
        # t = fixed + per_million * M through the two points; growth exponent k in t ~ M^k.
        per_million = (t_large - t_small) / (m_large - m_small)
        row: dict = {
            "task": task,
            f"wall s at {m_small:.1f}M": r(t_small, 1),
            f"wall s at {m_large:.1f}M": r(t_large, 1),
            "s per M events (slope)": r(per_million, 2),
            "fixed s (intercept)": r(t_small - per_million * m_small, 1),
            "growth exponent": r(math.log(t_large / t_small) / math.log(m_large / m_small), 2)
            if t_small > 0 and t_large > 0
            else None,
        }
        if m_scale is not None:
            row[f"line at {m_scale:.1f}M s"] = r(t_small + per_million * (m_scale - m_small), 1)
            row[f"measured at {m_scale:.1f}M s"] = r(measured_scale[task], 1) if task in measured_scale else ""
        table.append(row)
    notes = [
        f"Two sizes of the same generated log, each through the whole {NIGHTLY_DAG} DAG for two consecutive cutoffs "
        "(bench.nightly.measure_nights: tasks.airflow_env.AirflowStack, LocalExecutor, every Spark step a local-mode "
        "spark-submit on this machine); the second night of each is measured: "
        + "; ".join(
            f"{p['users']:,} users, {p['events']:,} events in the {LOOKBACK_DAYS}-day lookback "
            f"({p['bytes'] / p['events']:.1f} bytes of Parquet per event), {p['scored']:,} users scored"
            for p in points
        )
        + ".",
        "Slope and intercept: the straight line through the two points (wall = fixed + slope x millions of "
        "lookback events); the fixed part is mostly JVM and Python start-up, the model load and Airflow's "
        "scheduling. Growth exponent k in wall ~ events^k: 1 is linear, below 1 means the fixed part still "
        "dominates at the small size. docs/scaling.md projects from these.",
    ]
    if at_scale:
        notes.append(
            f"'measured at {m_scale:.1f}M': nightly_at_scale's latest result ({at_scale['measured_on']}, "
            f"{at_scale['users']:,} users), another run on this machine: how far the line through the two sizes "
            "carries."
        )
    return {
        "description": "The nightly DAG through Airflow at two lookback sizes: each task's wall time, its cost per "
        "million lookback events and its growth (docs/scaling.md, issue 28.5).",
        "table": table,
        "notes": notes,
        "points": points,
    }
