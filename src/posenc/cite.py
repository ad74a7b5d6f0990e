"""The bibliography (``references.bib``) and the project's own citation, as BibTeX, APA or Markdown.

``references.bib`` is read with bibtexparser 2 (``bibtexparser.parse_file`` / ``write_string``). APA
output follows the reference-list pattern of the APA Publication Manual (7th ed.):
``Last, F. M., Last, F. M., & Last, F. M. (Year). Title. Venue. https://doi.org/…``; BibTeX ``and others``
becomes ``et al.``, braces are dropped and LaTeX accents are decoded (``{\\"o}`` → ``ö``). Titles keep the
capitalisation of the BibTeX entry (changing case would need the protection braces to be exhaustive).

The project's own citation comes from ``CITATION.cff`` (with a built-in copy for installs without it); its
``preferred-citation`` is the survey the taxonomy follows.

This module knows nothing of cards (which keys a card cites is :mod:`posenc.cards.citation`): ``cards`` may
import ``cite``, never the reverse. No pandas and no torch: ``posenc cite`` must start fast.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import bibtexparser
from bibtexparser.library import Library
from bibtexparser.middlewares.names import parse_single_name_into_parts, split_multiple_persons_names
from bibtexparser.model import Entry, Field
from pylatexenc.latex2text import LatexNodes2Text  # a dependency of bibtexparser 2

from posenc import paths

__all__ = [
    "Bibliography",
    "FORMATS",
    "PROJECT_KEY",
    "apa",
    "arxiv_id",
    "bibliography",
    "entry_fields",
    "format_entries",
    "latex_to_text",
    "markdown",
    "project_entries",
    "read_bibliography",
    "to_bibtex",
]

FORMATS = ("bibtex", "apa", "markdown")
PROJECT_KEY = "posenc"

# Used when CITATION.cff is not available (e.g. an installed wheel without the repository).
_PROJECT_FALLBACK: dict[str, Any] = {
    "title": "posenc: a reproducible atlas of positional encodings for Transformer length extrapolation",
    "version": "0.1.0",
    "date-released": "2026-12-07",
    "repository-code": "https://github.com/posenc/posenc",
    "authors": [{"name": "posenc contributors"}],
    "license": "MIT",
    "preferred-citation": {
        "type": "conference-paper",
        "title": "Length Extrapolation of Transformers: A Survey from the Perspective of Positional Encoding",
        "authors": [
            {"family-names": f, "given-names": g}
            for f, g in [("Zhao", "Liang"), ("Feng", "Xiachong"), ("Feng", "Xiaocheng"), ("Zhong", "Weihong"),
                         ("Xu", "Dongliang"), ("Yang", "Qing"), ("Liu", "Hongtao"), ("Qin", "Bing"),
                         ("Liu", "Ting")]
        ],
        "collection-title": "Findings of the Association for Computational Linguistics: EMNLP 2024",
        "publisher": {"name": "Association for Computational Linguistics"},
        "year": 2024,
        "month": 11,
        "start": 9959,
        "end": 9977,
        "doi": "10.18653/v1/2024.findings-emnlp.582",
        "url": "https://aclanthology.org/2024.findings-emnlp.582",
    },
}


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Bibliography:
    """Parsed ``references.bib``: entries by key, plus ``errors`` as ``(line, message)`` (1-based lines)."""

    library: Library
    entries: dict[str, Entry]
    errors: list[tuple[int | None, str]]
    path: Path | None = None

    def get(self, key: str) -> Entry:
        """The entry ``key``; a :class:`KeyError` names the file and suggests close keys."""
        if key not in self.entries:
            close = difflib.get_close_matches(key, list(self.entries), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"{key!r} is not a key of {self.path or 'the bibliography'}{hint}")
        return self.entries[key]


def _parse(text: str, path: Path | None) -> Bibliography:
    # bibtexparser logs syntax errors as warnings; they are collected in ``errors`` instead.
    log = logging.getLogger("bibtexparser")  # its child loggers inherit this level
    previous = log.level
    log.setLevel(logging.CRITICAL)
    try:
        lib = bibtexparser.parse_string(text)
    finally:
        log.setLevel(previous)
    errors: list[tuple[int | None, str]] = []
    for block in lib.failed_blocks:
        line = block.start_line + 1 if block.start_line is not None else None
        err = getattr(block, "error", None)
        name = type(block).__name__
        if name == "DuplicateBlockKeyBlock":
            message = f"duplicate key {getattr(block, 'key', '?')!r}"
        elif name == "DuplicateFieldKeyBlock":
            dups = ", ".join(sorted(getattr(block, "duplicate_keys", []) or []))
            message = f"duplicate field(s) {dups}" if dups else "duplicate fields"
        else:
            reason = getattr(err, "abort_reason", None) or (str(err) if err is not None else "")
            message = f"BibTeX syntax error: {reason.strip() or type(err).__name__}"
        errors.append((line, message))
    errors.sort(key=lambda e: e[0] or 0)
    entries = {e.key: e for e in lib.entries}
    return Bibliography(lib, entries, errors, path)


def read_bibliography(path: str | os.PathLike[str]) -> Bibliography:
    """Parse a ``.bib`` file (UTF-8)."""
    p = Path(path)
    return _parse(p.read_text(encoding="utf-8"), p)


def bibliography(root: str | os.PathLike[str] | None = None) -> Bibliography:
    """``references.bib`` of the repository (see :func:`posenc.paths.find_root`)."""
    return read_bibliography(paths.find_root(root) / paths.BIB_FILE)


# ---------------------------------------------------------------------------------------------- text helpers
@lru_cache(maxsize=1)
def _latex_converter() -> Any:
    return LatexNodes2Text()


def latex_to_text(text: str) -> str:
    """BibTeX/LaTeX → plain Unicode: accents decoded, braces dropped, whitespace collapsed."""
    if not text:
        return ""
    if "\\" in text or "{" in text or "$" in text or "--" in text or "~" in text:
        try:
            text = _latex_converter().latex_to_text(text)
        except Exception:  # malformed LaTeX: fall back to dropping braces
            text = text.replace("{", "").replace("}", "")
    return re.sub(r"\s+", " ", text).strip()


def entry_fields(entry: Entry) -> dict[str, str]:
    """Field values of ``entry`` keyed by lower-case field name (raw BibTeX, braces kept)."""
    return {f.key.lower(): str(f.value) for f in entry.fields}


def _braced_whole(name: str) -> bool:
    """True when ``name`` is one brace group, e.g. ``{Meta AI}`` (a corporate author)."""
    if not (name.startswith("{") and name.endswith("}")):
        return False
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0 and i < len(name) - 1:
            return False
    return True


def _initials(given: str) -> str:
    """``Noah A.`` → ``N. A.``, ``Jean-Pierre`` → ``J.-P.``, ``{\\"U}mit`` → ``Ü.``."""
    out = []
    for token in latex_to_text(given).split():
        parts = []
        for piece in token.split("-"):
            letters = [p for p in piece.split(".") if p]
            parts.append(" ".join(p[0] + "." for p in letters))
        out.append("-".join(p for p in parts if p))
    return " ".join(p for p in out if p)


def _person(name: str) -> str:
    """One BibTeX name as APA ``Last, F. M.`` (corporate names as written)."""
    name = name.strip()
    if _braced_whole(name):
        return latex_to_text(name)
    try:
        parts = parse_single_name_into_parts(name, strict=False)
    except Exception:  # unparsable: print as written
        return latex_to_text(name)
    last = latex_to_text(" ".join(parts.von + parts.last))
    initials = _initials(" ".join(parts.first))
    jr = latex_to_text(" ".join(parts.jr))
    text = f"{last}, {initials}" if initials else last
    return f"{text}, {jr}" if jr else text


def _names(field_value: str) -> tuple[list[str], bool]:
    """Split a BibTeX name list; the flag is True when it ends with ``and others``."""
    names = [n for n in split_multiple_persons_names(field_value) if n.strip()]
    others = bool(names) and names[-1].strip().lower() == "others"
    if others:
        names = names[:-1]
    return names, others


def apa_authors(field_value: str) -> str:
    """APA author list: ``A``, ``A, & B``, ``A, B, & C``; 21+ names as the first 19, ``. . .``, the last;
    ``and others`` as ``et al.``."""
    names, others = _names(field_value)
    people = [_person(n) for n in names]
    if not people:
        return ""
    if others:
        return ", ".join(people) + ", et al."
    if len(people) == 1:
        return people[0]
    if len(people) > 20:
        return ", ".join(people[:19]) + ", . . . " + people[-1]
    return ", ".join(people[:-1]) + ", & " + people[-1]


def arxiv_id(fields: Mapping[str, str]) -> str | None:
    """The arXiv id of an entry (``eprint``, an arXiv ``journal``/``note``, or an arxiv.org URL)."""
    eprint = fields.get("eprint", "").strip()
    prefix = fields.get("archiveprefix", fields.get("eprinttype", "")).lower()
    pattern = r"(\d{4}\.\d{4,5}|[a-z][a-z.\-]*/\d{7})(v\d+)?"
    if eprint and (prefix == "arxiv" or re.fullmatch(pattern, eprint)):
        return eprint
    for key in ("journal", "note", "howpublished", "volume", "url"):
        m = re.search(r"arxiv(?:\.org/(?:abs|pdf)/|:\s*|\s+)(" + pattern + ")", fields.get(key, ""), re.I)
        if m:
            return m.group(1)
    return None


def _end(text: str) -> str:
    """``text`` with a closing period unless it already ends in punctuation."""
    text = text.strip()
    return text if not text or text[-1] in ".?!" else text + "."


def _venue(entry: Entry, f: Mapping[str, str]) -> str:
    kind = entry.entry_type.lower()
    t = {k: latex_to_text(v) for k, v in f.items()}
    pages = t.get("pages", "").replace("--", "–")
    if kind == "article" and t.get("journal") and not re.match(r"arxiv", t["journal"], re.I):
        out = t["journal"]
        if t.get("volume"):
            out += f", {t['volume']}" + (f"({t['number']})" if t.get("number") else "")
        return out + (f", {pages}" if pages else "")
    if kind in ("inproceedings", "conference", "incollection") and t.get("booktitle"):
        return f"In {t['booktitle']}" + (f" (pp. {pages})" if pages else "")
    if kind in ("phdthesis", "mastersthesis"):
        what = "Doctoral dissertation" if kind == "phdthesis" else "Master's thesis"
        return f"{what}, {t['school']}" if t.get("school") else what
    ax = arxiv_id(f)
    if ax:
        return f"arXiv preprint arXiv:{ax}"
    for key in ("journal", "booktitle", "howpublished", "institution", "organization", "publisher"):
        value = _without_urls(f.get(key, ""))
        if value:
            return value
    return ""


_URL_MACRO = re.compile(r"\\url\s*\{([^}]*)\}")


def _embedded_url(f: Mapping[str, str]) -> str | None:
    """A ``\\url{…}`` inside ``howpublished`` or ``note`` (common for blog posts)."""
    for key in ("howpublished", "note"):
        m = _URL_MACRO.search(f.get(key, ""))
        if m:
            return m.group(1).strip()
    return None


def _without_urls(value: str) -> str:
    """A field's text without ``\\url{…}`` or bare URLs, e.g. ``Reddit post, r/LocalLLaMA``."""
    text = _URL_MACRO.sub("", value)
    text = re.sub(r"https?://\S+", "", text)
    return latex_to_text(text).strip(" ,;:")


def _year(f: Mapping[str, str]) -> str:
    year = latex_to_text(f.get("year", "")) or latex_to_text(f.get("date", ""))[:4]
    return year or "n.d."


def apa(entry: Entry) -> str:
    """One entry as an APA reference: ``Authors (Year). Title. Venue. https://doi.org/…``."""
    f = entry_fields(entry)
    title = latex_to_text(f.get("title", "")) or entry.key
    if entry.entry_type.lower() == "software":  # APA: "Title (Version 1.0) [Computer software]."
        version = latex_to_text(f.get("version", ""))
        title += (f" (Version {version})" if version else "") + " [Computer software]"
        venue = latex_to_text(f.get("publisher", ""))
    else:
        venue = _venue(entry, f)
    title = _end(title)
    authors = apa_authors(f["author"]) if f.get("author") else ""
    if not authors and f.get("editor"):
        n = len(_names(f["editor"])[0])
        authors = apa_authors(f["editor"]) + (" (Eds.)" if n > 1 else " (Ed.)")
    year = _year(f)
    # APA: the author element ends with a period; without authors the title takes its place.
    parts = [f"{_end(authors)} ({year}). {title}" if authors else f"{title} ({year})."]
    if venue:
        parts.append(_end(venue))
    link = _link(f, prefer_arxiv=False)
    if link:
        parts.append(link)
    return " ".join(parts)


def _link(f: Mapping[str, str], prefer_arxiv: bool, card_arxiv: str | None = None) -> str | None:
    doi = f.get("doi", "").strip()
    doi = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", doi, flags=re.I)
    ax = arxiv_id(f) or card_arxiv
    url = f.get("url", "").strip() or _embedded_url(f) or ""
    links = [
        f"https://arxiv.org/abs/{ax}" if ax else None,
        f"https://doi.org/{doi}" if doi else None,
    ]
    if not prefer_arxiv:
        links.reverse()
    links.append(url or None)
    return next((x for x in links if x), None)


def markdown(entry: Entry, card_arxiv: str | None = None) -> str:
    """One Markdown list item: the title linked to arXiv (else the DOI, else the URL), authors, year, venue."""
    f = entry_fields(entry)
    title = latex_to_text(f.get("title", "")) or entry.key
    title = title.replace("[", "\\[").replace("]", "\\]")
    link = _link(f, prefer_arxiv=True, card_arxiv=card_arxiv)
    head = f"[{title}]({link})" if link else title
    authors = apa_authors(f["author"]) if f.get("author") else ""
    tail = f"{_end(authors)} ({_year(f)})." if authors else f"({_year(f)})."
    venue = _venue(entry, f)
    return f"- {head}. {tail}" + (f" {_end(venue)}" if venue else "")


def to_bibtex(entries: Sequence[Entry]) -> str:
    """The entries as BibTeX (``bibtexparser.write_string``)."""
    return bibtexparser.write_string(Library(list(entries))).strip() + "\n"


def format_entries(entries: Sequence[Entry], fmt: str, arxiv: Mapping[str, str] | None = None) -> str:
    """Entries in ``fmt`` (``bibtex``, ``apa``, ``markdown``); ``arxiv`` maps keys to a fallback arXiv id."""
    if fmt == "bibtex":
        return to_bibtex(entries)
    if fmt == "apa":
        return "\n".join(apa(e) for e in entries) + "\n"
    if fmt == "markdown":
        arxiv = arxiv or {}
        return "\n".join(markdown(e, arxiv.get(e.key)) for e in entries) + "\n"
    raise ValueError(f"unknown citation format {fmt!r}; choose one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------- the project
def _cff(root: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``CITATION.cff`` (read with the strict YAML reader), else the built-in copy when there is none."""
    try:
        r = paths.find_root(root)
    except paths.RootError:
        return _PROJECT_FALLBACK
    path = r / paths.CITATION_FILE
    if not path.is_file():
        return _PROJECT_FALLBACK
    data = paths.read_yaml(path, r)
    if not isinstance(data, dict):
        raise paths.YAMLReadError(paths.relative(path, r), "expected a mapping at the top level")
    return data


def _cff_people(people: Iterable[Mapping[str, Any]]) -> str:
    names = []
    for p in people:
        if "name" in p:  # an entity
            names.append("{" + str(p["name"]) + "}")
        else:
            given = p.get("given-names", "")
            names.append(f"{p.get('family-names', '')}, {given}".strip(", "))
    return " and ".join(names)


def _cff_entry(ref: Mapping[str, Any], key: str) -> Entry:
    """A CFF ``preferred-citation`` (a conference paper, article or software) as a BibTeX entry."""
    kind = {"conference-paper": "inproceedings", "article": "article", "software": "software"}.get(
        str(ref.get("type")), "misc"
    )
    fields = [Field("title", str(ref.get("title", ""))), Field("author", _cff_people(ref.get("authors", [])))]
    if ref.get("collection-title"):
        fields.append(Field("booktitle", str(ref["collection-title"])))
    if ref.get("journal"):
        fields.append(Field("journal", str(ref["journal"])))
    if ref.get("year"):
        fields.append(Field("year", str(ref["year"])))
    if ref.get("start") and ref.get("end"):
        fields.append(Field("pages", f"{ref['start']}--{ref['end']}"))
    publisher = ref.get("publisher")
    if isinstance(publisher, Mapping) and publisher.get("name"):
        fields.append(Field("publisher", str(publisher["name"])))
    for k in ("doi", "url"):
        if ref.get(k):
            fields.append(Field(k, str(ref[k])))
    return Entry(kind, key, fields)


def project_entries(root: str | os.PathLike[str] | None = None) -> list[Entry]:
    """posenc itself (from ``CITATION.cff``) followed by its preferred citation, the survey.

    When ``references.bib`` holds the survey (same DOI), that entry and its key are used.
    """
    cff = _cff(root)
    fields = [
        Field("title", "{" + str(cff.get("title", "posenc")) + "}"),
        Field("author", _cff_people(cff.get("authors", []))),
    ]
    if cff.get("date-released"):
        fields.append(Field("year", str(cff["date-released"])[:4]))
    for cff_key, bib_key in (("version", "version"), ("license", "license"), ("repository-code", "url"),
                             ("doi", "doi")):
        if cff.get(cff_key):
            fields.append(Field(bib_key, str(cff[cff_key])))
    out = [Entry("software", PROJECT_KEY, fields)]
    ref = cff.get("preferred-citation")
    if isinstance(ref, Mapping):
        survey = None
        doi = str(ref.get("doi", "")).lower()
        try:
            bib = bibliography(root)
        except (OSError, ValueError):
            bib = None
        if bib is not None and doi:
            survey = next((e for e in bib.entries.values() if entry_fields(e).get("doi", "").lower() == doi), None)
        if survey is None:
            first = (ref.get("authors") or [{}])[0]
            last = str(first.get("family-names") or first.get("name") or "anon").split()[-1].lower()
            word = next((w for w in re.findall(r"[a-z]+", str(ref.get("title", "")).lower())
                         if w not in {"a", "an", "the", "of", "on", "and", "for"}), "")
            survey = _cff_entry(ref, f"{last}{ref.get('year', '')}{word}")
        out.append(survey)
    return out
