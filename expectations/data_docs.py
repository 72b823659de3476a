"""Data Docs that render offline: GX's pages with no asset fetched from a CDN.

GX 1.x's page templates load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from CDNs, and its
index page is an empty ``<table>`` that bootstrap-table fills from JavaScript: without network access the
index is blank. The views here render the same documents through GX's own templates with every ``http(s)``
stylesheet, script and image reference removed on load, a small local stylesheet instead
(``data_docs_templates/offline_styles.css``), the logo from the site's ``static/`` copy, and tables
rendered to plain HTML on the server (``data_docs_templates/bootstrap_table.j2``, rows link to their page).
``configure_site`` points a file-backed project's ``local_site`` at these views; GX imports them by
module name when it builds the site.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader

TEMPLATES = Path(__file__).with_name("data_docs_templates")
SITE_NAME = "local_site"

_REMOTE_TAG = re.compile(
    r"""<link\b[^>]*\bhref=["']https?://[^>]*>"""  # stylesheets
    r"""|<script\b[^>]*\bsrc=["']https?://[^>]*>\s*</script>"""  # scripts
)
# top_navbar.j2 replaces the local image folder it has just computed with a web address; without the line the
# local one stands. The index page computes none, hence the default.
_REMOTE_IMAGES = re.compile(r"""\{%-?\s*set static_images_dir\s*=\s*["']https?://[^%]*%\}""")
_LOCAL_IMAGES = '{% if static_images_dir is not defined %}{% set static_images_dir = "./static/images/" %}{% endif %}'
_REMOTE_CSS_URL = re.compile(r"""url\(\s*["']?https?://[^)]*\)""")
_HEAD_END = "</head>"
_OFFLINE_STYLES = "<style>{% include 'offline_styles.css' %}</style>\n  </head>"


def offline_source(source: str) -> str:
    """A GX template or stylesheet without remote assets, the pages' ``</head>`` preceded by the local styles."""
    source = _REMOTE_TAG.sub("", source)
    source = _REMOTE_IMAGES.sub(_LOCAL_IMAGES, source)
    source = _REMOTE_CSS_URL.sub("none", source)
    return source.replace(_HEAD_END, _OFFLINE_STYLES, 1)


class _OfflineLoader(BaseLoader):
    """This package's templates first, then GX's, each source passed through ``offline_source``."""

    def __init__(self, gx_loader: BaseLoader):
        self.loader = ChoiceLoader([FileSystemLoader(str(TEMPLATES)), gx_loader])

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.loader.get_source(environment, template)
        return offline_source(source), filename, uptodate


def _offline(view: Any) -> None:
    view.env.loader = _OfflineLoader(view.env.loader)


class OfflineIndexPageView(DefaultJinjaIndexPageView):
    """The site's index page (the list of validation results), renderable offline."""

    def __init__(self, custom_styles_directory: str | None = None, custom_views_directory: str | None = None):
        super().__init__(custom_styles_directory, custom_views_directory)
        _offline(self)


class OfflinePageView(DefaultJinjaPageView):
    """A validation result or expectation suite page, renderable offline."""

    def __init__(self, custom_styles_directory: str | None = None, custom_views_directory: str | None = None):
        super().__init__(custom_styles_directory, custom_views_directory)
        _offline(self)


def _view(cls: type) -> dict[str, str]:
    return {"module_name": __name__, "class_name": cls.__name__}


def site_config(site: dict[str, Any], index_limit: int | None) -> dict[str, Any]:
    """``site`` (a ``data_docs_sites`` entry) rendered through the offline views, its index page listing the
    ``index_limit`` most recent validation results (None: all of them)."""
    site = dict(site)
    builder = dict(site.get("site_index_builder") or {"class_name": "DefaultSiteIndexBuilder"})
    builder.update(validation_results_limit=index_limit, view=_view(OfflineIndexPageView))
    site["site_index_builder"] = builder
    sections = dict(site.get("site_section_builders") or {})
    for name in ("validations", "expectations"):
        sections[name] = {**(sections.get(name) or {}), "view": _view(OfflinePageView)}
    site["site_section_builders"] = sections
    return site


def configure_site(context: Any, index_limit: int | None) -> None:
    """Point the file-backed project's ``local_site`` at the offline views (a no-op when it already is)."""
    sites = context.variables.data_docs_sites or {}
    if SITE_NAME not in sites:
        return
    wanted = site_config(sites[SITE_NAME], index_limit)
    if wanted != sites[SITE_NAME]:
        context.update_data_docs_site(SITE_NAME, wanted)
