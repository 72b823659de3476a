"""The README's examples are found mechanically (tests/helpers/readme.py; tests/e2e/test_readme.py runs them)."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.config import DEFAULT_CONFIG, REPO_ROOT, load_config
from tasks.layers import data_docs_site
from tests.helpers.readme import Example, dates, extract, rewrite

DOC = """# Title

Run `make demo` first; `ruff` and `conf/pipeline.yaml` are no commands, `.venv/bin/python -m tasks.x --a 1` is.

```
 diagram ── `make not-this`
```

```bash
export PIPELINE_CONFIG=conf/pipeline.yaml   # comment
# a whole-line comment
.venv/bin/python -m tasks.airflow_env backfill create --dag-id d \\
    --from-date 2026-01-09 --to-date 2026-01-10
.venv/bin/python -m tasks.warehouse sql "select 1"
```

```sql
SELECT a, b -- the columns
FROM t WHERE x = ';'
  AND ds = DATE '2026-01-15';
SELECT 2;
```

```sql postgresql
SELECT 3;
```

```python
import duckdb
con = duckdb.connect("var/warehouse.duckdb", read_only=True)
```
"""


def test_extract_finds_every_example_in_document_order():
    found = extract(DOC)
    assert [(e.kind, e.line) for e in found] == [
        ("inline", 3),
        ("inline", 3),
        ("bash", 12),
        ("bash", 14),
        ("duckdb", 18),
        ("duckdb", 21),
        ("postgresql", 25),
        ("python", 29),
    ]
    assert [e.text for e in found[:2]] == ["make demo", ".venv/bin/python -m tasks.x --a 1"]
    backfill = found[2]
    assert backfill.text == (
        ".venv/bin/python -m tasks.airflow_env backfill create --dag-id d --from-date 2026-01-09 --to-date 2026-01-10"
    )
    assert backfill.setup == ("export PIPELINE_CONFIG=conf/pipeline.yaml # comment",)
    assert found[4].text == "SELECT a, b\nFROM t WHERE x = ';'\n  AND ds = DATE '2026-01-15'"
    assert found[6].text == "SELECT 3"
    assert found[7].text.startswith("import duckdb\n")


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("```bash\nls \\\n```\n", "ends inside a continued line"),
        ("```sql\nSELECT 1\n```\n", "without a closing ';'"),
        ("```bash\nls\n", "never closed"),
    ],
)
def test_malformed_blocks_are_refused_with_their_line(doc, problem):
    with pytest.raises(ValueError, match=f"README line 1: .*{problem}|README line 2: .*{problem}"):
        extract(doc)


def test_rewrite_moves_var_paths_dates_and_the_config():
    text = (
        'duckdb.connect("var/warehouse.duckdb") ls var/gx/ .venv/x my_var/y --ds 2026-01-15 '
        "PIPELINE_CONFIG=conf/pipeline.yaml"
    )
    out = rewrite(text, "/tmp/t/var", -5, "/a.yaml:/b.yaml")
    assert out == (
        'duckdb.connect("/tmp/t/var/warehouse.duckdb") ls /tmp/t/var/gx/ .venv/x my_var/y --ds 2026-01-10 '
        "PIPELINE_CONFIG=/a.yaml:/b.yaml"
    )
    assert dates(out) == [dt.date(2026, 1, 10)]


def test_readme_examples_parse_and_their_dates_exist_after_make_demo():
    """Every date in an example is a day the committed config's demo generates, or its scoring day ds (an example
    on a real sample of ../shared/data uses that sample's days)."""
    cfg = load_config(DEFAULT_CONFIG, use_env=False)
    first = cfg.generator.start
    ds = first + dt.timedelta(days=cfg.generator.n_days)
    examples = extract((REPO_ROOT / "README.md").read_text())
    assert len(examples) > 10
    on_demo = [e for e in examples if "shared/data/" not in e.text]
    assert len(on_demo) > len(examples) - 3
    bad = [(e.line, d) for e in on_demo for d in dates(e.text) if not first <= d <= ds]
    assert bad == [], f"dates outside the demo's {first}..{ds}"
    assert all(isinstance(e, Example) for e in examples)


def test_readme_names_the_data_docs_page_the_runner_writes():
    cfg = load_config(DEFAULT_CONFIG, use_env=False)
    page = data_docs_site(cfg.paths.gx_dir) / "index.html"
    assert f"`{page.relative_to(REPO_ROOT)}`" in (REPO_ROOT / "README.md").read_text()
