"""The Jupyter Book: pages generated from the cards and the published results, and the HTML build.

One module per question:

* :mod:`~posenc.book.context` — what the book is made from, read once through :mod:`posenc.cards` (cards,
  categories, registry, citations) and :mod:`posenc.experiment` (results, verdicts, leaderboard rows): which
  preset is published (``gpu``, else ``cpu``, else ``smoke``) and which results are stale;
* :mod:`~posenc.book.safe` — card text as data: escaping, and the checks for what cannot be escaped (formulas,
  URLs);
* :mod:`~posenc.book.pages` and ``templates/*.md.j2`` — every page, from Jinja templates that escape by default;
* :mod:`~posenc.book.tables` — the interactive tables (itables, offline), :mod:`~posenc.book.figures` — the
  figures (:mod:`posenc.experiment.plots`), :mod:`~posenc.book.findings` — the home page's findings;
* :mod:`~posenc.book.toc` — ``_toc.yml``; :mod:`~posenc.book.build` — writing the pages and running
  ``jupyter-book build . -W -n --keep-going``; :mod:`~posenc.book.sphinx_ext` — the footer and script fixes.

Generated files: ``book/generated/`` (method, category, table, taxonomy and leaderboard pages, the figures, and
the includes of the hand-written pages: ``home_results.md``, ``cite_posenc.md``, ``task_learnability.md``,
``sweep_cost.md``, ``rerun_times.md``, ``hf_support.md``) and ``_toc.yml``.
"""

from __future__ import annotations

from posenc.book.build import WARNING_RE, BuildResult, Generated, build, generate, render
from posenc.book.context import GENERATED, RUNS, SHOWN_PRESETS, Context, load_context
from posenc.book.pages import category_page, colab_url, leaderboard_page, method_page, table_page, taxonomy_tree
from posenc.book.safe import CardTextError, Md, escape, role_text
from posenc.book.tables import LEADERBOARD_ID, TABLE_ID, atlas_frame, leaderboard_frame
from posenc.book.toc import TOC_FILE, toc, toc_yaml

__all__ = [
    "GENERATED",
    "LEADERBOARD_ID",
    "RUNS",
    "SHOWN_PRESETS",
    "TABLE_ID",
    "TOC_FILE",
    "WARNING_RE",
    "BuildResult",
    "CardTextError",
    "Context",
    "Generated",
    "Md",
    "atlas_frame",
    "build",
    "category_page",
    "colab_url",
    "escape",
    "generate",
    "leaderboard_frame",
    "leaderboard_page",
    "load_context",
    "method_page",
    "render",
    "role_text",
    "table_page",
    "taxonomy_tree",
    "toc",
    "toc_yaml",
]
