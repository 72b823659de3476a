"""The one typed config: committed YAML loads, every key is commented, bad input is a clear error."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from tasks.config import DEFAULT_CONFIG, REPO_ROOT, ConfigError, load_config, parse_ds
from tasks.layers import layer_root


def test_committed_config_loads():
    cfg = load_config(DEFAULT_CONFIG, use_env=False)
    assert cfg.mlflow.model_name == "purchase_intent"
    assert cfg.mlflow.champion_alias == "champion"
    assert cfg.warehouse.table == "intent_scores"
    assert layer_root(cfg, "events").parts[-3:] == ("var", "data", "events")


def test_every_key_is_commented():
    lines = DEFAULT_CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s+)([a-z_]+):", line)
        if m:
            prev = lines[i - 1].strip()
            assert prev.startswith("#"), f"key {m.group(2)!r} (line {i + 1}) has no comment above it"


def test_unknown_key_is_rejected(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("training:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"training\.epochz"):
        load_config([DEFAULT_CONFIG, overlay], use_env=False)


def test_wrong_type_is_rejected(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("training:\n  epochs: 'three'\n")
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        load_config([DEFAULT_CONFIG, overlay], use_env=False)


def test_model_type_and_family_sections_name_a_family(tmp_path):
    with pytest.raises(ConfigError, match=r"training\.model_type: .*unknown model family 'gru'"):
        load_config(DEFAULT_CONFIG, overrides={"training": {"model_type": "gru"}}, use_env=False)
    with pytest.raises(ConfigError, match=r"models: .*\['gru'\] name no model family"):
        load_config(DEFAULT_CONFIG, overrides={"models": {"gru": {"num_layers": 1}}}, use_env=False)


def test_loading_the_config_imports_no_torch():
    # The DAG files load it at parse time; the family names come from file names, not imports.
    code = "import sys; from tasks.config import load_config; load_config(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_string_number_is_not_coerced():
    with pytest.raises(ConfigError, match=r"features\.horizon_days"):
        load_config(DEFAULT_CONFIG, overrides={"features": {"horizon_days": "1"}}, use_env=False)


def test_bad_timezone_and_windows():
    with pytest.raises(ConfigError, match="time zone"):
        load_config(DEFAULT_CONFIG, overrides={"pipeline": {"timezone": "Mars/Olympus"}}, use_env=False)
    with pytest.raises(ConfigError, match="windows_days"):
        load_config(DEFAULT_CONFIG, overrides={"features": {"windows_days": [7, 1]}}, use_env=False)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("paths: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_env_overrides_endpoints_only(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("PIPELINE_WAREHOUSE_URL", "postgresql://postgres@db:5432/warehouse")
    monkeypatch.setenv("SPARK_MASTER", "spark://spark-master:7077")
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.mlflow.resolved_tracking_uri == "http://mlflow:5000"
    assert cfg.warehouse.backend == "postgresql"
    assert cfg.spark.master == "spark://spark-master:7077"


def test_overlay_from_env(monkeypatch, tmp_path):
    overlay = tmp_path / "small.yaml"
    overlay.write_text(yaml.safe_dump({"generator": {"n_users": 50}}))
    monkeypatch.setenv("PIPELINE_CONFIG", f"{DEFAULT_CONFIG}:{overlay}")
    assert load_config().generator.n_users == 50


def test_config_is_frozen():
    cfg = load_config(DEFAULT_CONFIG, use_env=False)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training.epochs = 99


def test_parse_ds():
    assert parse_ds("2026-01-15").isoformat() == "2026-01-15"
    assert parse_ds("2026-01-15T00:00:00+00:00").isoformat() == "2026-01-15"
    with pytest.raises(Exception, match="not a date"):
        parse_ds("yesterday")
