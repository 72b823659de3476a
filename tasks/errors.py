"""Errors shared by every step, and the CLI wrapper that turns bad data into a distinct exit code.

A step that stops because the *data* is wrong (a failed expectation, too many bad rows, a raw file
that is not the source's format) raises a ``DataError``; one that stops because its input was never
delivered or landed (no files for the day, no events partition) raises its subclass ``NoDataError``.
Its CLI exits with ``EXIT_DATA_ERROR`` (65, sysexits EX_DATAERR) so the orchestrator fails the task
without retries; anything else is treated as transient and may be retried. A bad configuration
(``ConfigError``) ends a CLI the same way with ``EXIT_CONFIG_ERROR`` (78, sysexits EX_CONFIG) and one
``config error: ...`` line.

Whatever ends a CLI, ``run_cli`` also writes its one-line reason to the file named by the
``PIPELINE_REASON_FILE`` environment variable when that is set: the orchestrator sets it for a
spark-submit and fails the task with that line instead of the spark-submit command.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

EXIT_DATA_ERROR = 65
# sysexits EX_CONFIG: the configuration is wrong; retrying will not help either.
EXIT_CONFIG_ERROR = 78

# Environment variable naming the file a CLI's one-line failure reason goes to (see run_cli).
REASON_FILE_ENV = "PIPELINE_REASON_FILE"
# A reason line is cut here: it has to fit a log line, a summary entry and the UI.
MAX_REASON_CHARS = 600

ReasonKind = Literal["data", "config", "error"]


class DataError(Exception):
    """The input data is wrong; retrying will not help."""


class NoDataError(DataError, FileNotFoundError):
    """The input the step needs was never delivered or landed (no files for the day, no events partition)."""


class ConfigError(ValueError):
    """The configuration file is missing, malformed or fails validation (re-exported by ``tasks.config``)."""


def first_line(exc: BaseException) -> str:
    """The exception's message as one line: its first non-empty line, plus the first detail line under it
    (a failed suite's first failed expectation, a cleaning error's reasons), cut to ``MAX_REASON_CHARS``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[1].lstrip('- ')}"
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _prefix(exc: BaseException) -> str:
    if isinstance(exc, NoDataError):
        return "NO DATA: "
    if isinstance(exc, DataError):
        return f"DATA ERROR ({type(exc).__name__}): "
    if isinstance(exc, ConfigError):
        return "config error: "
    return f"{type(exc).__name__}: "


def reason_of(exc: BaseException) -> tuple[ReasonKind, str]:
    """How a failure reads in logs and summaries (``NO DATA: ...``, ``DATA ERROR (<type>): ...``,
    ``config error: ...``, ``<type>: ...``), and whether it is the data, the config or anything else."""
    kind: ReasonKind = "data" if isinstance(exc, DataError) else "config" if isinstance(exc, ConfigError) else "error"
    return kind, _prefix(exc) + first_line(exc)


def data_docs_of(exc: BaseException) -> str | None:
    """The Data Docs page of a failed validation (a ``DataQualityError``'s summary), if the error has one."""
    docs = getattr(getattr(exc, "summary", None), "data_docs", None)
    return str(docs) if docs else None


def write_reason(path: Path, kind: ReasonKind, reason: str, data_docs: str | None = None) -> None:
    """The reason file ``run_cli`` leaves for the orchestrator (JSON: kind, reason, data_docs)."""
    Path(path).write_text(json.dumps({"kind": kind, "reason": reason, "data_docs": data_docs}) + "\n")


def read_reason(path: Path) -> dict | None:
    """A reason file's content; None when the step wrote none (it succeeded or died before reporting)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    if not text.strip():
        return None
    data = json.loads(text)
    return data if isinstance(data, dict) and data.get("reason") else None


def _report(exc: BaseException) -> tuple[ReasonKind, str]:
    kind, reason = reason_of(exc)
    target = os.environ.get(REASON_FILE_ENV)
    if target:
        write_reason(Path(target), kind, reason, data_docs_of(exc))
    return kind, reason


def run_cli(main: Callable[[], object]) -> int:
    """Run a step's ``main``; bad or missing data -> one clear ``DATA ERROR (...)`` / ``NO DATA: ...`` line
    on stderr and exit code 65, a bad config -> one ``config error: ...`` line and exit code 78; anything
    else propagates (traceback, exit 1). The reason line also goes to ``$PIPELINE_REASON_FILE`` when set."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except (DataError, ConfigError) as e:
        # The whole message on stderr (a failed suite lists every expectation); the reason file gets one line.
        _report(e)
        print(f"{_prefix(e)}{e}", file=sys.stderr, flush=True)
        return EXIT_DATA_ERROR if isinstance(e, DataError) else EXIT_CONFIG_ERROR
    except Exception as e:
        _report(e)
        raise
    return 0
