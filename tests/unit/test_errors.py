"""run_cli: exit codes by kind of failure and the one-line reason it leaves for the orchestrator."""

from __future__ import annotations

import json

import pytest

from tasks.errors import (
    EXIT_CONFIG_ERROR,
    EXIT_DATA_ERROR,
    REASON_FILE_ENV,
    ConfigError,
    DataError,
    NoDataError,
    first_line,
    read_reason,
    run_cli,
)


def _raise(exc: BaseException):
    def main():
        raise exc

    return main


@pytest.fixture
def reason_file(tmp_path, monkeypatch):
    path = tmp_path / "reason.json"
    monkeypatch.setenv(REASON_FILE_ENV, str(path))
    return path


def test_data_error_exits_65_with_its_reason(reason_file, capsys):
    err = DataError("too many bad rows in dt=2026-01-14: 120 of 1000 quarantined\n  unknown_event_type: 120")
    assert run_cli(_raise(err)) == EXIT_DATA_ERROR
    reported = read_reason(reason_file)
    assert reported == {
        "kind": "data",
        "reason": "DATA ERROR (DataError): too many bad rows in dt=2026-01-14: 120 of 1000 quarantined "
        "unknown_event_type: 120",
        "data_docs": None,
    }
    # stderr keeps the whole message.
    assert "DATA ERROR (DataError): too many bad rows" in capsys.readouterr().err


def test_no_data_and_config_errors(reason_file):
    assert run_cli(_raise(NoDataError("no events landed for 2026-12-01; newest cleaned day is 2026-01-14"))) == 65
    assert (
        read_reason(reason_file)["reason"]
        == "NO DATA: no events landed for 2026-12-01; newest cleaned day is 2026-01-14"
    )
    assert run_cli(_raise(ConfigError("training.epochs must be > 0"))) == EXIT_CONFIG_ERROR
    assert read_reason(reason_file) == {
        "kind": "config",
        "reason": "config error: training.epochs must be > 0",
        "data_docs": None,
    }


def test_other_errors_propagate_and_leave_their_line(reason_file):
    with pytest.raises(RuntimeError):
        run_cli(
            _raise(
                RuntimeError("An error occurred while calling o71.parquet.\n: java.io.IOException: disk full\n\tat x")
            )
        )
    assert json.loads(reason_file.read_text())["reason"] == (
        "RuntimeError: An error occurred while calling o71.parquet. : java.io.IOException: disk full"
    )
    assert json.loads(reason_file.read_text())["kind"] == "error"


def test_data_docs_of_a_failed_validation(reason_file, tmp_path):
    class Summary:
        data_docs = tmp_path / "gx" / "index.html"

    class SuiteFailed(DataError):
        summary = Summary()

    run_cli(_raise(SuiteFailed("data quality check 'events_2026-01-14': 1 of 12 expectations failed")))
    assert read_reason(reason_file)["data_docs"] == str(tmp_path / "gx" / "index.html")


def test_success_and_no_reason_file(tmp_path, monkeypatch):
    monkeypatch.delenv(REASON_FILE_ENV, raising=False)
    assert run_cli(lambda: None) == 0
    assert run_cli(_raise(DataError("x"))) == EXIT_DATA_ERROR  # nothing to write to: still the exit code
    assert read_reason(tmp_path / "absent.json") is None


def test_first_line_is_cut():
    assert first_line(ValueError("")) == "ValueError"
    assert len(first_line(ValueError("x" * 5000))) == 600
