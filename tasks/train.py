"""Distributed training of an intent model under torchrun, MLflow logging and registration: the CLI.

The work is done in ``tasks.training`` (see its modules). Each process reads only its own Parquet
files of every split, the ranks merge their encoder statistics, and DDP averages gradients. Rank 0
logs params, per-epoch and test metrics, the manifest and the packaged pyfunc model to MLflow,
registers a new version of ``mlflow.model_name`` and writes
``{run_id, model_version, model_uri, test_metrics}`` to ``--output``.

Entry points:
    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.train \
        --training-set DIR --output JSON [--model-type FAMILY] [--epochs E] [--config ...]
    python -m tasks.train --launch --training-set DIR [...]   (runs the command above, prints the result)
    ``tasks.training.launcher.launch(cfg, training_set_dir, ...)`` from Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tasks.config import add_common_args, config_from_args
from tasks.errors import run_cli
from tasks.models.base import model_class
from tasks.models.families import family_names
from tasks.training.launcher import launch
from tasks.training.worker import train_distributed


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__.split("\n")[0]))
    parser.add_argument("--training-set", type=Path, required=True, help="training-set folder (with manifest.json)")
    parser.add_argument("--output", type=Path, help="result JSON written by rank 0 (required unless --launch)")
    parser.add_argument("--model-type", choices=family_names(), help="default: training.model_type")
    parser.add_argument("--epochs", type=int, help="default: training.epochs")
    parser.add_argument("--launch", action="store_true", help="start torchrun with --nproc processes and wait")
    parser.add_argument("--nproc", type=int, help="processes for --launch (default: training.nproc_per_node)")
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --launch: Optuna search first (default: training.search.enabled)",
    )
    parser.add_argument(
        "--allow-unvalidated",
        action="store_true",
        help="train even without a passing validation result of the training set (ad-hoc runs)",
    )
    parser.add_argument(
        "--fault-after-epoch", type=int, help="crash drill: rank 0 kills itself after writing that epoch's checkpoint"
    )
    parser.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="log the model to its run without registering a version (a candidate for `tasks.registry select`)",
    )
    parser.add_argument(
        "--init-from",
        help="with --launch: pretrained encoder (models:/<name>/<version>) to start from (default: training.init_from)",
    )
    parser.add_argument("--parent-run-id", help="nest this training's MLflow run under that run (search)")
    parser.add_argument(
        "--trial",
        action="store_true",
        help="search trial: score on the validation split only; no test metrics, no registration",
    )
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs <= 0:
        parser.error("--epochs must be positive")
    cfg = config_from_args(args)
    if args.launch:
        result = launch(
            cfg,
            args.training_set,
            model_type=args.model_type,
            epochs=args.epochs,
            nproc=args.nproc,
            search=args.search,
            allow_unvalidated=args.allow_unvalidated,
            fault_after_epoch=args.fault_after_epoch,
            register=args.register,
            init_from=args.init_from,
        )
        print(
            json.dumps(
                {
                    "model_version": result.model_version,
                    "model_uri": result.model_uri,
                    "run_id": result.run_id,
                    "output": str(result.output),
                }
            )
        )
        return 0
    if args.output is None:
        parser.error("--output is required (or use --launch)")
    family = args.model_type or cfg.training.model_type
    if model_class(family).trainer != "torchrun":
        parser.error(f"{family!r} is fitted in one process, not under torchrun: use --launch")
    train_distributed(
        cfg,
        args.training_set,
        args.output,
        model_type=args.model_type,
        epochs=args.epochs,
        allow_unvalidated=args.allow_unvalidated,
        fault_after_epoch=args.fault_after_epoch,
        parent_run_id=args.parent_run_id,
        trial=args.trial,
        register=args.register,
    )
    return 0


if __name__ == "__main__":
    # Bad data (e.g. an unvalidated training set) exits 65 with one line, as every step's CLI does.
    sys.exit(run_cli(main))
