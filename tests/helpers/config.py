"""The committed config with every runtime path moved under one temporary ``var`` folder."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from tasks.config import DEFAULT_CONFIG, PipelineConfig, _deep_merge, load_config


def isolated_overrides(var: Path, **sections: dict) -> dict:
    """Overrides that put data layers, MLflow and the warehouse under ``var``, merged with ``sections``."""
    base = {
        "paths": {"var_dir": str(var), "incoming_dir": str(var / "incoming")},
        "mlflow": {"tracking_uri": f"sqlite:///{var}/mlflow.db", "artifact_root": str(var / "mlartifacts")},
        "warehouse": {"url": f"duckdb:///{var}/warehouse.duckdb"},
    }
    return _deep_merge(base, sections)


def isolated_config(var: Path, **sections: dict) -> PipelineConfig:
    """The config under ``var``, whose MLflow store starts as a copy of an empty, fully migrated one."""
    var = Path(var)
    store = var / "mlflow.db"
    if not store.exists():
        var.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_mlflow_store(), store)
    return load_config(DEFAULT_CONFIG, overrides=isolated_overrides(var, **sections), use_env=False)


@cache
def _empty_mlflow_store() -> Path:
    # MLflow builds a new SQLite store by running every schema migration (~2.5 s); tests make dozens of stores,
    # so the migrations run once per process and each store starts as a copy of that empty database.
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="mlflow-empty-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    uri = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return folder / "mlflow.db"
