"""The committed config with every runtime path moved under one temporary ``var`` folder."""

from __future__ import annotations

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
    return load_config(DEFAULT_CONFIG, overrides=isolated_overrides(var, **sections), use_env=False)
