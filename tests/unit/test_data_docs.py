"""Data Docs read offline: no page the site builds fetches a stylesheet, script or image from the network.

GX validates a small pandas DataFrame here (its Spark path is tests/spark/test_expectations_events.py); the pages
come from the same site configuration the runner sets (expectations.data_docs.configure_site).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from expectations.data_docs import configure_site, offline_source
from tasks.layers import data_docs_site


class _Assets(HTMLParser):
    """Every URL a page loads by itself (stylesheets, scripts, images, inline CSS url()), and its links."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img") and a.get("src"):
            self.loaded.append(a["src"] or "")
        if tag == "link" and a.get("href"):
            self.loaded.append(a["href"] or "")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")

    def handle_data(self, data: str) -> None:
        self.loaded += re.findall(r"url\(\s*['\"]?([^'\")]+)", data)


def _assets(page: Path) -> _Assets:
    parser = _Assets()
    parser.feed(page.read_text())
    return parser


def _validate(gx_dir: Path, values: list[float], run: str) -> None:
    import great_expectations as gx
    import pandas as pd
    from great_expectations.checkpoint import UpdateDataDocsAction

    context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    configure_site(context, 10)
    batch_def = (
        context.data_sources.add_or_update_pandas("pandas")
        .add_dataframe_asset(f"asset_{run}")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(
        gx.ExpectationSuite(
            name=f"suite_{run}",
            expectations=[gx.expectations.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=10)],
        )
    )
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=run, data=batch_def, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=run, validation_definitions=[validation], actions=[UpdateDataDocsAction(name="docs")])
    )
    checkpoint.run(batch_parameters={"dataframe": pd.DataFrame({"price": values})})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    gx_dir = tmp_path_factory.mktemp("gx")
    _validate(gx_dir, [1.0, 2.0], "passing")
    _validate(gx_dir, [1.0, 99.0], "failing")
    return data_docs_site(gx_dir)


def test_index_page_loads_nothing_from_the_network_and_lists_every_result(site):
    index = site / "index.html"
    assets = _assets(index)
    remote = [u for u in assets.loaded if re.match(r"(https?:)?//", u)]
    assert remote == [], remote
    # The local assets it does load exist (the logo GX copies into static/).
    local = [u.split("?")[0] for u in assets.loaded if not u.startswith("data:")]
    assert local and all((site / u).is_file() for u in local), local
    # The results are in the HTML itself (GX's own index builds its table in the browser from a CDN script).
    pages = sorted(p.relative_to(site).as_posix() for p in site.glob("validations/**/*.html"))
    assert len(pages) == 2
    assert sorted({u for u in assets.links if u.startswith("validations/")}) == pages
    text = index.read_text()
    assert "suite_passing" in text and "suite_failing" in text
    assert "bootstrapTable" not in text


def test_validation_pages_load_nothing_from_the_network(site):
    for page in site.glob("validations/**/*.html"):
        assets = _assets(page)
        assert [u for u in assets.loaded if re.match(r"(https?:)?//", u)] == [], page
        assert all((page.parent / u.split("?")[0]).resolve().is_file() for u in assets.loaded), assets.loaded
    failing = next(site.glob("validations/suite_failing/**/*.html")).read_text()
    assert "expect_column_values_to_be_between" in failing or "values must be" in failing


def test_offline_source_strips_remote_tags_and_keeps_local_ones():
    source = (
        '<head>\n<link rel="stylesheet" href="https://cdn.example/x.css"/>\n'
        '<script src="https://cdn.example/x.js" crossorigin="anonymous"></script>\n'
        '<link rel="shortcut icon" href="./static/images/favicon.ico"/>\n'
        "<style>a { background: url('https://cdn.example/logo.png') 0 0; }</style>\n</head>"
    )
    out = offline_source(source)
    assert "https://" not in out
    assert 'href="./static/images/favicon.ico"' in out
    assert out.endswith("<style>{% include 'offline_styles.css' %}</style>\n  </head>")
