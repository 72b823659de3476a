"""The one typed config: committed YAML loads, every key is commented, bad input is a clear error."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

import tasks.config as tasks_config
from tasks.config import DEFAULT_CONFIG, REPO_ROOT, ConfigError, load_config, parse_ds
from tasks.errors import EXIT_CONFIG_ERROR
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


def test_duplicate_key_names_key_file_and_line(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("training:\n  epochs: 3\n  batch_size: 64\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"o\.yaml line 4: duplicate key 'epochs' \(first at line 2\)"):
        load_config([DEFAULT_CONFIG, overlay], use_env=False)
    overlay.write_text("cleaning:\n  max_bad_fraction: 0.1\ncleaning:\n  max_bad_fraction: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 3: duplicate key 'cleaning' \(first at line 1\)"):
        load_config([DEFAULT_CONFIG, overlay], use_env=False)
    # The same key in two different mappings, and a merge key overridden, are not duplicates.
    overlay.write_text("base: &b\n  x: 1\nother:\n  <<: *b\n  x: 2\n")
    assert tasks_config._read_yaml(overlay) == {"base": {"x": 1}, "other": {"x": 2}}


def test_committed_config_has_no_duplicate_key():
    tasks_config._read_yaml(DEFAULT_CONFIG)


def test_cross_field_contradictions_are_refused():
    with pytest.raises(ConfigError, match=r"cleaning: .*volume_min_history=8 exceeds volume_lookback_days=7"):
        load_config(DEFAULT_CONFIG, overrides={"cleaning": {"volume_min_history": 8}}, use_env=False)
    load_config(DEFAULT_CONFIG, overrides={"cleaning": {"volume_min_history": 7}}, use_env=False)
    with pytest.raises(ConfigError, match=r"features: .*windows_days \[1, 3, 7, 30\] reach beyond lookback_days=14"):
        load_config(DEFAULT_CONFIG, overrides={"features": {"lookback_days": 14}}, use_env=False)


def test_pii_patterns_are_added_switched_off_and_checked():
    cfg = load_config(DEFAULT_CONFIG, overrides={"cleaning": {"pii_patterns": {"ssn": r"[0-9]{3}-[0-9]{2}-[0-9]{4}"}}})
    assert list(cfg.cleaning.pii_patterns) == ["email", "card", "phone", "ssn"]
    cfg = load_config(DEFAULT_CONFIG, overrides={"cleaning": {"pii_patterns": {"phone": None}}}, use_env=False)
    assert list(cfg.cleaning.pii_patterns) == ["email", "card"]
    for patterns, problem in [
        ({"ssn": "[0-9"}, r"pattern 'ssn' is not a regular expression"),
        ({"any": "x*"}, r"pattern 'any' matches empty text"),
        ({"Bad-Name": "x"}, r"pattern name 'Bad-Name' must be lower-case"),
        ({"twice": r"(ab)\1"}, r"pattern 'twice' uses a backreference"),
    ]:
        with pytest.raises(ConfigError, match=rf"cleaning\.pii_patterns.*{problem}"):
            load_config(DEFAULT_CONFIG, overrides={"cleaning": {"pii_patterns": patterns}}, use_env=False)


def test_default_pii_patterns_on_real_looking_text():
    # The same expressions run in Spark (Java regex); tests/spark/test_clean_events.py checks them there.
    patterns = load_config(DEFAULT_CONFIG, use_env=False).cleaning.pii_patterns

    def scrub(text: str) -> str:
        for name, pattern in patterns.items():
            text = re.sub(pattern, f"[{name.upper()}]", text)
        return text

    assert scrub("mail john.doe+shop@example.co.uk, card 5500 0055 5555 5559") == "mail [EMAIL], card [CARD]"
    assert scrub("+1 (415) 555-0132 / 020 7946 0958 / 13800138000") == "[PHONE] / [PHONE] / [PHONE]"
    for plain in ("iphone 15 pro max 256gb", "size 10 12 14", "rtx 4090 24gb", "2023 2024 calendar", "c++11 book"):
        assert scrub(plain) == plain


@pytest.mark.parametrize(
    "module",
    ["tasks.land", "spark_jobs.clean_events", "spark_jobs.score"],
)
def test_cli_bad_config_is_one_line(tmp_path, module):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text() + "\ncleaning:\n  max_bad_fraction: 0.5\n")
    args = {
        "tasks.land": ["--day", "2026-01-01"],
        "spark_jobs.clean_events": ["--day", "2026-01-01"],
        "spark_jobs.score": ["--ds", "2026-01-01", "--run-id", "r"],
    }[module]
    out = subprocess.run(
        [sys.executable, "-m", module, "--config", str(bad), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == EXIT_CONFIG_ERROR, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.fullmatch(r"config error: config file .*bad\.yaml line \d+: duplicate key 'cleaning' .*", lines[0])
