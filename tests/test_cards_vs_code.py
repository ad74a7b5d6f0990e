"""Every method card agrees with its implementation: hyperparameter names and defaults, registry ids, and the
RoPE dependency of methods applied to RoPE models.

Representation rules for a card's ``default`` against the constructor default of the implementation
(:func:`posenc.pe.base.hyperparameters`):

* a number must be a YAML number equal to the code's (``math.isclose``) and of the same kind: a Python float
  is written with a decimal point (``10000.0``), an int without (``8``); a bool must be ``true``/``false``;
* a string, list or mapping must be equal (numbers inside lists compared with ``math.isclose``);
* ``None`` in the code means "derived at construction from the shared arguments" (e.g. ``max_len = train_len``):
  the card writes ``null`` or a non-empty string that states the derivation (e.g. ``"train_len//8"``);
* a callable default is written as the callable's ``__name__``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from posenc.pe.base import available, get_class, hyperparameters

METHODS = Path(__file__).resolve().parents[1] / "taxonomy" / "methods"


def _cards() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(METHODS.glob("*.yaml")):
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[path.stem] = card
    return out


CARDS = _cards()
IMPLEMENTED = sorted(cid for cid, card in CARDS.items() if card.get("implementation"))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def default_mismatch(card_value: Any, code_value: Any) -> str | None:
    """Why ``card_value`` does not represent ``code_value`` under the module's rules, or None when it does."""
    if code_value is None:
        if card_value is None or (isinstance(card_value, str) and card_value.strip()):
            return None
        return f"code default is None (derived at construction): write null or a string, not {card_value!r}"
    if isinstance(code_value, bool):
        return None if card_value is code_value else f"expected {str(code_value).lower()}, got {card_value!r}"
    if _is_number(code_value):
        if not _is_number(card_value):
            return f"expected the number {code_value!r}, got {card_value!r}"
        if isinstance(code_value, float) != isinstance(card_value, float):
            kind = "a float (with a decimal point)" if isinstance(code_value, float) else "an int"
            return f"expected {kind} like the code's {code_value!r}, got {card_value!r}"
        return None if math.isclose(card_value, code_value) else f"expected {code_value!r}, got {card_value!r}"
    if isinstance(code_value, str):
        return None if card_value == code_value else f"expected {code_value!r}, got {card_value!r}"
    if isinstance(code_value, (list, tuple)):
        if not isinstance(card_value, list) or len(card_value) != len(code_value):
            return f"expected a list like {list(code_value)!r}, got {card_value!r}"
        for i, (a, b) in enumerate(zip(card_value, code_value, strict=True)):
            why = default_mismatch(a, b)
            if why:
                return f"item {i}: {why}"
        return None
    if isinstance(code_value, dict):
        return None if card_value == code_value else f"expected {code_value!r}, got {card_value!r}"
    if callable(code_value):
        name = getattr(code_value, "__name__", repr(code_value))
        return None if card_value == name else f"expected the callable's name {name!r}, got {card_value!r}"
    return f"no representation rule for a code default of type {type(code_value).__name__}"


# ---------------------------------------------------------------------------------------------- the rules
def test_default_mismatch_rules() -> None:
    assert default_mismatch(10000.0, 10000.0) is None
    assert default_mismatch(10000, 10000.0) is not None  # a float is rendered as a float
    assert default_mismatch(8.0, 8) is not None  # and an int as an int
    assert default_mismatch(0.30000000000000004, 0.3) is None
    assert default_mismatch(0.31, 0.3) is not None
    assert default_mismatch(True, True) is None and default_mismatch(1, True) is not None
    assert default_mismatch(None, None) is None and default_mismatch("train_len", None) is None
    assert default_mismatch(4, None) is not None and default_mismatch("", None) is not None
    assert default_mismatch("rope", "rope") is None and default_mismatch("pi", "rope") is not None
    assert default_mismatch([1.0, 2.0], (1.0, 2.0)) is None and default_mismatch([1.0], (1.0, 2.0)) is not None
    assert default_mismatch("sqrt", math.sqrt) is None and default_mismatch("exp", math.sqrt) is not None
    assert default_mismatch(None, 1.0) is not None


# ---------------------------------------------------------------------------------------------- registry
def test_every_registered_id_has_a_card_that_names_it() -> None:
    problems = []
    for pe_id in available():
        card = CARDS.get(pe_id)
        if card is None:
            problems.append(f"registry id {pe_id!r}: no card taxonomy/methods/{pe_id}.yaml")
        elif card.get("implementation") != pe_id:
            problems.append(f"taxonomy/methods/{pe_id}.yaml: field 'implementation' is "
                            f"{card.get('implementation')!r}, expected {pe_id!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("card_id", IMPLEMENTED)
def test_implementation_is_the_card_id(card_id: str) -> None:
    impl = CARDS[card_id]["implementation"]
    assert impl == card_id, f"taxonomy/methods/{card_id}.yaml: field 'implementation' is {impl!r}, expected {card_id!r}"
    assert impl in available(), f"taxonomy/methods/{card_id}.yaml: field 'implementation' {impl!r} is not registered"


# ---------------------------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize("card_id", IMPLEMENTED)
def test_hyperparameter_names_match_the_constructor(card_id: str) -> None:
    card = CARDS[card_id]
    names = [hp["name"] for hp in card.get("hyperparameters") or []]
    code = hyperparameters(card["implementation"])
    missing, extra = sorted(set(code) - set(names)), sorted(set(names) - set(code))
    assert not missing and not extra, (
        f"taxonomy/methods/{card_id}.yaml: field 'hyperparameters' must name exactly the constructor keywords "
        f"{sorted(code)}; missing {missing}, not constructor arguments {extra}"
    )


@pytest.mark.parametrize("card_id", IMPLEMENTED)
def test_hyperparameter_defaults_match_the_constructor(card_id: str) -> None:
    card = CARDS[card_id]
    code = hyperparameters(card["implementation"])
    problems = []
    for i, hp in enumerate(card.get("hyperparameters") or []):
        if hp["name"] not in code:
            continue  # reported by the names test
        why = default_mismatch(hp.get("default"), code[hp["name"]])
        if why:
            problems.append(f"taxonomy/methods/{card_id}.yaml: field 'hyperparameters[{i}].default' "
                            f"({hp['name']}): {why}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------- relations
@pytest.mark.parametrize("card_id", IMPLEMENTED)
def test_methods_applied_to_rope_relate_to_rope(card_id: str) -> None:
    card = CARDS[card_id]
    if get_class(card["implementation"]).applies_to != "rope":
        return
    rel = card.get("relations") or {}
    related = set(rel.get("builds_on") or []) | set(rel.get("variant_of") or [])
    assert "rope" in related, (
        f"taxonomy/methods/{card_id}.yaml: field 'relations.builds_on' (or 'relations.variant_of') must list "
        f"rope, because the implementation applies to RoPE-trained models (applies_to = 'rope')"
    )
