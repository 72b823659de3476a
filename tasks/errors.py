"""Errors shared by every step, and the CLI wrapper that turns bad data into a distinct exit code.

A step that stops because the *data* is wrong (a failed expectation, too many bad rows, a raw file
that is not the source's format) raises a ``DataError``. Its CLI exits with ``EXIT_DATA_ERROR`` (65,
sysexits EX_DATAERR) so the orchestrator fails the task without retries; anything else is treated as
transient and may be retried. A bad configuration (``ConfigError``) ends a CLI the same way with
``EXIT_CONFIG_ERROR`` (78, sysexits EX_CONFIG) and one ``config error: ...`` line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

EXIT_DATA_ERROR = 65
# sysexits EX_CONFIG: the configuration is wrong; retrying will not help either.
EXIT_CONFIG_ERROR = 78


class DataError(Exception):
    """The input data is wrong; retrying will not help."""


class ConfigError(ValueError):
    """The configuration file is missing, malformed or fails validation (re-exported by ``tasks.config``)."""


def run_cli(main: Callable[[], object]) -> int:
    """Run a step's ``main``; bad data -> one clear line on stderr and exit code 65, a bad config -> one
    ``config error: ...`` line and exit code 78."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except DataError as e:
        print(f"DATA ERROR ({type(e).__name__}): {e}", file=sys.stderr, flush=True)
        return EXIT_DATA_ERROR
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG_ERROR
    return 0
