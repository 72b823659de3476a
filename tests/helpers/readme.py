"""The runnable examples of a Markdown document (the README), found mechanically, and how a test rewrites them.

What counts as an example:
- a fenced block whose info string starts with ``bash``, ``sql`` or ``python``: a ``bash`` block gives one
  example per command (lines joined at a trailing ``\\``; comment-only lines dropped; ``export`` lines are
  kept as the ``setup`` of every later command in the block), a ``sql`` block one example per statement
  (DuckDB, or PostgreSQL when the info string also says ``postgresql``), a ``python`` block one example;
- an inline code span outside fenced blocks that starts like a shell command (``COMMAND_PREFIXES``).
Fenced blocks with another or no info string (diagrams, code maps) hold no examples.

The examples are written for the working tree after ``make demo`` with the committed config; ``rewrite``
moves one onto another demo's state: every ``var/`` path to that demo's var folder, every YYYY-MM-DD date
by a fixed number of days, and ``PIPELINE_CONFIG=conf/pipeline.yaml`` to that demo's config.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

COMMAND_PREFIXES = (
    "make ",
    ".venv/bin/",
    "python -m ",
    "duckdb ",
    "docker ",
    "cp ",
    "torchrun ",
    "spark-submit ",
    "airflow ",
)
RUNNABLE = ("bash", "sql", "python")

_FENCE = re.compile(r"^(```+|~~~+)\s*(.*)$")
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_DATE = re.compile(r"\b(20\d\d-\d\d-\d\d)\b")
# A relative var/ path: at the start of a token (after a space, quote, '=', '(' or line start), not inside another path.
_VAR = re.compile(r"(?<![\w./-])var/")
_COMMITTED_CONFIG = "PIPELINE_CONFIG=conf/pipeline.yaml"


@dataclass(frozen=True)
class Example:
    kind: str  # "bash" | "duckdb" | "postgresql" | "python" | "inline"
    text: str
    line: int  # 1-based line of the README where it starts
    setup: tuple[str, ...] = field(default=())  # bash: the block's earlier export lines

    def __str__(self) -> str:
        return f"README line {self.line} ({self.kind}): {self.text}"


def _bash_commands(lines: list[str], first_line: int) -> list[Example]:
    out: list[Example] = []
    setup: list[str] = []
    pending, start = "", 0
    for offset, raw in enumerate(lines):
        line = raw.rstrip()
        if not pending:
            start = first_line + offset
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        command = re.sub(r"\s+", " ", pending + line.strip()).strip()
        pending = ""
        if command.startswith("export "):
            setup.append(command)
            continue
        out.append(Example("bash", command, start, tuple(setup)))
    if pending:
        raise ValueError(f"README line {start}: bash block ends inside a continued line")
    return out


def _sql_statements(lines: list[str], first_line: int, kind: str) -> list[Example]:
    out: list[Example] = []
    buf: list[str] = []
    start = 0
    for offset, raw in enumerate(lines):
        code = raw.split("--", 1)[0].rstrip()
        if not code.strip():
            continue
        if not buf:
            start = first_line + offset
        buf.append(code)
        if code.endswith(";"):
            out.append(Example(kind, "\n".join(buf).rstrip(";").strip(), start))
            buf = []
    if buf:
        raise ValueError(f"README line {start}: SQL statement without a closing ';'")
    return out


def extract(markdown: str) -> list[Example]:
    """Every runnable example of ``markdown``, in document order."""
    examples: list[Example] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            for m in _INLINE.finditer(lines[i]):
                text = m.group(1).strip()
                if text.startswith(COMMAND_PREFIXES):
                    examples.append(Example("inline", text, i + 1))
            i += 1
            continue
        marker, info = fence.group(1), fence.group(2).split()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == marker), None)
        if end is None:
            raise ValueError(f"README line {i + 1}: fenced block is never closed")
        body, first = lines[i + 1 : end], i + 2
        language = info[0] if info else ""
        if language == "bash":
            examples += _bash_commands(body, first)
        elif language == "sql":
            examples += _sql_statements(body, first, "postgresql" if "postgresql" in info[1:] else "duckdb")
        elif language == "python":
            examples.append(Example("python", "\n".join(body), first))
        i = end + 1
    return examples


def dates(text: str) -> list[dt.date]:
    return [dt.date.fromisoformat(d) for d in _DATE.findall(text)]


def rewrite(text: str, var_dir: str, shift_days: int, config: str) -> str:
    """``text`` with each relative ``var/`` path under ``var_dir``, each date moved by ``shift_days`` and the
    committed config, where ``PIPELINE_CONFIG`` names it, replaced by ``config``."""
    moved = _VAR.sub(var_dir.rstrip("/") + "/", text).replace(_COMMITTED_CONFIG, f"PIPELINE_CONFIG={config}")
    return _DATE.sub(lambda m: (dt.date.fromisoformat(m.group(1)) + dt.timedelta(days=shift_days)).isoformat(), moved)
