"""A small Sphinx extension for the book (listed in ``_config.yml`` under ``sphinx.extra_extensions``).

* Every page's footer names the posenc version, the commit and the build date (``SOURCE_DATE_EPOCH`` when set,
  for reproducible builds; else today, UTC).
* The colour mode defaults to light (the theme's empty default is a console error on a first visit).
* ``favicon.ico`` is also served from the site's root (the root redirect page has no icon link).
* Each script is emitted once: jupyter-book registers sphinx-thebe's inline configuration twice, and the second
  ``const THEBE_JS_URL`` is a JavaScript error on every page ("Identifier 'THEBE_JS_URL' has already been
  declared").
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from posenc import __version__, paths

__all__ = ["setup", "footer_text"]


def footer_text(root: Path) -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch and epoch.isdigit() else \
        dt.datetime.now(dt.timezone.utc)
    commit = paths.git_commit(root, short=True)
    return (f'<p class="posenc-footer">posenc {__version__}' + (f" (commit <code>{commit}</code>)" if commit else "")
            + f", built {when:%Y-%m-%d}. Code MIT-licensed; see <code>CITATION.cff</code> to cite.</p>")


def _config_inited(app: Any, config: Any) -> None:
    opts = dict(config.html_theme_options or {})
    opts["extra_footer"] = str(opts.get("extra_footer") or "") + footer_text(Path(app.srcdir))
    # Pages led by a wide table or figure (the tables, the leaderboard, the method pages' figures) get the width
    # of the "on this page" column, so that the figures' legends are shown near their natural size.
    # Pages no pattern matches (the method pages) get none; two wildcard patterns may not match one page.
    toc = ["page-toc"]
    opts.setdefault("secondary_sidebar_items", {
        "book/*": toc, "book/generated/*": toc, "book/generated/categories/*": toc, "book/runs/**": toc,
        "book/generated/leaderboard": [], "book/generated/table": []})
    config.html_theme_options = opts
    # Without a default, a first visit (nothing stored yet) logs "Got invalid theme mode" to the console.
    config.html_context = {"default_mode": "light", **dict(config.html_context or {})}


def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    unique = []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        # The same inline script is registered once with filename None and once with "" (sphinx-thebe).
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted((str(k), str(v)) for k, v in attrs.items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    # In place: this list is the builder's own, and listeners after this one (MathJax on pages with equations)
    # still add their scripts to it.
    scripts[:] = unique


def _favicon_at_root(app: Any, exception: Exception | None) -> None:
    """Browsers ask for /favicon.ico on pages without an icon link (the root redirect page): serve it there too."""
    if exception is not None or app.builder.format != "html":
        return
    icon = Path(app.outdir) / "_static" / "favicon.ico"
    if icon.is_file():
        shutil.copyfile(icon, Path(app.outdir) / "favicon.ico")


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _config_inited)
    app.connect("build-finished", _favicon_at_root)
    # Before the theme's own listeners: emit_firstresult stops at the first one that returns a template.
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
