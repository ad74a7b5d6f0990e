"""`posenc list | show | query | cite | validate`: the knowledge base on the command line.

None of these imports torch, matplotlib or pandas: cards are read as plain records
(:func:`posenc.cards.records`), tables are printed with tabulate, citations with bibtexparser.
Exit status: 0 on success, 1 when ``validate`` finds problems, 2 on bad input (unknown id, bad query).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from posenc import cards, paths
from posenc.commands import examples

TABLE_FORMATS = ("table", "csv", "json", "markdown")
CITE_FORMATS = ("bibtex", "apa", "markdown", "table", "csv", "json")
DEFAULT_COLUMNS = ("id", "name", "category", "year", "coverage", "implementation")


# ---------------------------------------------------------------------------------------------- rendering
def _cell(value: Any, fmt: str) -> str:
    """One value as text: lists joined, booleans as ``true``/``false``, null as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(not isinstance(v, (list, Mapping)) for v in value):
        return ", ".join(_cell(v, fmt) for v in value)
    if isinstance(value, (list, Mapping)):
        return json.dumps(value, ensure_ascii=False, default=str)
    text = str(value)
    if fmt == "markdown":
        text = text.replace("|", "\\|").replace("\n", "<br>")
    return text


def render(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, *, wrap: int | None = None) -> str:
    """Rows as a table (tabulate), CSV, JSON (a list of objects) or a Markdown table."""
    if fmt == "json":
        data = [{c: r.get(c) for c in columns} for r in rows]
        return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r.get(c), fmt) for c in columns])
        return buf.getvalue()
    from tabulate import tabulate  # imported here: only the table formats need it

    body = [[_cell(r.get(c), fmt) for c in columns] for r in rows]
    if fmt == "markdown":
        return tabulate(body, headers=list(columns), tablefmt="github", disable_numparse=True) + "\n"
    if fmt == "table":
        widths = [None] * (len(columns) - 1) + [wrap] if wrap else None
        return tabulate(body, headers=list(columns), tablefmt="simple", disable_numparse=True,
                        maxcolwidths=widths) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def _card_rows(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A card as ``field``/``value`` rows: nested mappings by dotted path, list items by index; flat
    mappings inside lists (a hyperparameter, a claim's ``expect``, its ``points``) stay on one row."""
    rows: list[dict[str, Any]] = []

    def flat(m: Mapping[str, Any]) -> bool:
        return all(not isinstance(v, (list, Mapping)) for v in m.values())

    def inline(m: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}: {_cell(v, 'table')}" for k, v in m.items())

    def walk(path: str, value: Any, in_list: bool) -> None:
        if isinstance(value, Mapping):
            if in_list and flat(value):
                rows.append({"field": path, "value": inline(value)})
                return
            for k, v in value.items():
                walk(f"{path}.{k}" if path else str(k), v, in_list)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            if all(flat(v) and len(v) <= 2 for v in value):
                rows.append({"field": path, "value": "; ".join(inline(v) for v in value)})
                return
            for i, v in enumerate(value):
                walk(f"{path}[{i}]", v, True)
        elif isinstance(value, list) and any(isinstance(v, str) and len(v) > 40 for v in value):
            for i, v in enumerate(value):  # sentences (notes): one row each rather than comma-joined
                walk(f"{path}[{i}]", v, True)
        else:
            rows.append({"field": path, "value": value})

    walk("", {k: v for k, v in card.items() if not str(k).startswith("__")}, False)
    return rows


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _fail(args: argparse.Namespace, message: str, code: int = 2) -> int:
    sys.stderr.write(f"posenc {args.command}: error: {message}\n")
    return code


def _errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the library's input errors into a message on stderr and exit status 2."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (cards.TaxonomyError, cards.QueryError, paths.RootError) as exc:
            return _fail(args, str(exc))
        except KeyError as exc:  # a bibliography key that does not resolve
            return _fail(args, str(exc.args[0]) if exc.args else repr(exc))
        except FileNotFoundError as exc:
            return _fail(args, f"{exc.filename or exc}: file not found")

    handler.__doc__ = fn.__doc__
    return handler


def _columns(spec: str | None, default: Iterable[str]) -> list[str]:
    if not spec:
        return list(default)
    if spec.strip() == "all":
        return list(cards.COLUMNS)
    cols = []
    for name in (c.strip() for c in spec.split(",")):
        if not name:
            continue
        col = cards.FIELD_ALIASES.get(name, name)
        if col not in cards.COLUMNS:
            raise cards.QueryError(f"unknown column {name!r}" + cards.hint(name, cards.COLUMNS))
        cols.append(col)
    return cols


# ---------------------------------------------------------------------------------------------- handlers
@_errors
def cmd_list(args: argparse.Namespace) -> int:
    """Print every card (one row each)."""
    cols = _columns(args.columns, DEFAULT_COLUMNS)
    _out(render(cards.records(args.root), cols, args.format))
    return 0


@_errors
def cmd_query(args: argparse.Namespace) -> int:
    """Print the cards matching a filter expression."""
    text = " ".join(args.expression)
    cols = _columns(args.columns, DEFAULT_COLUMNS)
    cards.parse_query(text)  # report syntax errors before reading the cards
    rows = cards.filter_records(cards.records(args.root), text)
    _out(render(rows, cols, args.format))
    if not rows and args.format == "table":
        sys.stderr.write("no card matches\n")
    return 0


@_errors
def cmd_show(args: argparse.Namespace) -> int:
    """Print one whole card."""
    card = cards.load_card(cards.resolve_id(args.id, args.root), args.root)
    if args.format == "json":
        _out(json.dumps(dict(card), indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        _out(render(_card_rows(card), ("field", "value"), args.format, wrap=90))
    return 0


@_errors
def cmd_cite(args: argparse.Namespace) -> int:
    """Print citations: a card's primary reference, all its references, the project, or everything."""
    from posenc import cite  # imported here: bibtexparser costs ~60 ms, and only this command needs it

    if args.everything:
        bib = cite.bibliography(args.root)
        entries = list(bib.entries.values())
        arxiv: dict[str, str] = {}
    elif args.id is None:
        return _fail(args, "give a card id (or 'posenc', or --everything)")
    elif args.id == cite.PROJECT_KEY:
        entries, arxiv = cite.project_entries(args.root), {}
    else:
        card = cards.load_card(cards.resolve_id(args.id, args.root), args.root)
        entries, arxiv = cards.card_entries(card, args.all, args.root)
    if args.format in cite.FORMATS:
        _out(cite.format_entries(entries, args.format, arxiv))
        return 0
    rows = []
    for e in entries:
        f = cite.entry_fields(e)
        rows.append({
            "key": e.key,
            "type": e.entry_type,
            "authors": cite.apa_authors(f["author"]) if f.get("author") else "",
            "year": cite.latex_to_text(f.get("year", "")),
            "title": cite.latex_to_text(f.get("title", "")),
            "doi": f.get("doi") or None,
            "arxiv": cite.arxiv_id(f) or arxiv.get(e.key),
            "url": f.get("url") or None,
        })
    cols = ("key", "type", "authors", "year", "title", "doi", "arxiv", "url")
    _out(render(rows, cols, args.format))
    return 0


@_errors
def cmd_validate(args: argparse.Namespace) -> int:
    """Check every card, the category tree, the bibliography and the registry; exit 1 on any problem."""
    root = paths.find_root(args.root)
    problems = cards.validate(root)
    n_cards = len(cards.card_ids(root))
    summary = f"{n_cards} card{'s' if n_cards != 1 else ''}, {len(problems)} problem{'s' if len(problems) != 1 else ''}"
    if args.format == "json":
        _out(json.dumps({"cards": n_cards, "problems": [p.as_dict() for p in problems]}, indent=2,
                        ensure_ascii=False) + "\n")
    elif args.format == "table":
        _out("".join(f"{p}\n" for p in problems) + summary + "\n")
    else:
        rows = [p.as_dict() for p in problems]
        _out(render(rows, ("file", "line", "field", "message"), args.format))
        if args.format == "markdown":
            _out(f"\n{summary}\n")
    if args.format != "table":
        sys.stderr.write(summary + "\n")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------- parsers
def _common(p: argparse.ArgumentParser, formats: Sequence[str] = TABLE_FORMATS, default: str = "table") -> None:
    p.add_argument("--format", "-f", choices=formats, default=default, help=f"output format (default: {default})")
    p.add_argument("--root", default=None,
                   help="repository root holding taxonomy/ (default: $POSENC_ROOT, else found from the "
                        "current directory)")


def add_parsers(sub: Any) -> None:  # argparse's private _SubParsersAction type
    """Register ``list``, ``show``, ``query``, ``cite`` and ``validate`` on ``sub``."""
    p = sub.add_parser("list", help="list every method card", description=cmd_list.__doc__,
                       **examples("posenc list", "posenc list --columns id,name,year --format csv"))
    p.add_argument("--columns", "-c", help=f"comma-separated columns, or 'all' (default: {','.join(DEFAULT_COLUMNS)})")
    _common(p)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("show", help="print one card", description=cmd_show.__doc__,
                       **examples("posenc show yarn", "posenc show 'Attention with Linear Biases' --format json"))
    p.add_argument("id", help="card id (or a card's name or alias)")
    _common(p)
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser(
        "query",
        help="filter the cards, e.g. 'category~rope learnable=false year>=2022'",
        description=(
            "Filter the cards. Conditions are FIELD OP VALUE separated by spaces, all of which must hold. "
            "OP is one of = != < <= > >= ~ (~ is a case-insensitive substring match). On list fields and "
            "'+'-joined Table 1 fields, = means membership and ~ matches any element. true/false, null and "
            "numbers are typed; quote values with spaces: \"aliases~'linear biases'\". Fields are the columns "
            "of 'posenc list --columns all' (table1.learnable and relations.builds_on work too)."
        ),
        **examples("posenc query 'category~rope learnable=false year>=2022'",
                   "posenc query needs=fine_tuning --columns id,name,year --format markdown",
                   "posenc query \"aliases~'linear biases'\""),
    )
    p.add_argument("expression", nargs="+", help="conditions, e.g. category~rope learnable=false year>=2022")
    p.add_argument("--columns", "-c", help="comma-separated columns, or 'all'")
    _common(p)
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("cite", help="print a card's citation (BibTeX, APA or Markdown)", description=cmd_cite.__doc__,
                       **examples("posenc cite alibi", "posenc cite alibi --format apa", "posenc cite yarn --all",
                                  "posenc cite posenc", "posenc cite --everything"))
    p.add_argument("id", nargs="?", help="card id, or 'posenc' for this project")
    p.add_argument("--all", action="store_true", help="every key the card cites, not only the primary one")
    p.add_argument("--everything", action="store_true", help="the whole bibliography")
    _common(p, CITE_FORMATS, "bibtex")
    p.set_defaults(handler=cmd_cite)

    p = sub.add_parser("validate", help="check the cards, categories, bibliography and registry",
                       description=cmd_validate.__doc__, **examples("posenc validate", "posenc validate --format json"))
    _common(p)
    p.set_defaults(handler=cmd_validate)
