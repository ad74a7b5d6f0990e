"""posenc.cards.query: flat records, the filter language (typed, checked against the schema, never evaluated)
and the pandas view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from posenc import cards

ALIBI = "taxonomy/methods/alibi.yaml"


def test_load_flattens_table1_and_relations(repo: Path) -> None:
    df = cards.load(repo)
    assert list(df.columns) == list(cards.COLUMNS)
    assert list(df["id"]) == ["alibi", "rope", "t5_bias"]
    row = df.set_index("id").loc["alibi"]
    assert row["manifestation"] == "bias"
    assert bool(row["learnable"]) is False
    assert row["integration"] == "add" and row["injection"] == "every"
    assert row["table1_source"] == "survey"
    assert row["builds_on"] == ["t5_bias"] and row["variant_of"] == []
    assert row["file"] == ALIBI
    assert "table1" not in df.columns and "relations" not in df.columns


# ---------------------------------------------------------------------------------------------- queries
@pytest.fixture
def recs(repo: Path) -> list[dict[str, Any]]:
    return cards.records(repo)


def ids(rows: Any) -> list[str]:
    return [r["id"] for r in rows]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("category~rope", ["rope"]),
        ("category~ROPE learnable=false", ["rope"]),
        ("learnable=false year>=2021", ["alibi", "rope"]),
        ("learnable=true", ["t5_bias"]),
        ("year<2020", ["t5_bias"]),
        ("year_venue>2022", ["rope"]),
        ("year=2021 year_venue!=2024", ["alibi"]),
        ("aliases~'linear biases'", ["alibi"]),
        ('aliases~"linear BIASES"', ["alibi"]),
        ("aliases='Attention with Linear Biases'", ["alibi"]),
        ("aliases=Attention", []),  # = on a list is membership, not substring
        ("builds_on=t5_bias", ["alibi"]),
        ("relations.builds_on=t5_bias", ["alibi"]),
        ("table1.learnable = false", ["alibi", "rope"]),
        ("manifestation=bias", ["alibi", "t5_bias"]),
        ("implementation=null", ["t5_bias"]),
        ("implementation!=null", ["alibi", "rope"]),
        ("code=null", ["rope", "t5_bias"]),
        ("aliases=null", ["t5_bias"]),
        ("name='T5 bias'", ["t5_bias"]),
        ("arxiv='2108.12409'", ["alibi"]),
        ("arxiv=2108.12409", ["alibi"]),
        ("arxiv~1910.1", ["t5_bias"]),
        ("survey_section~3.2.1", ["rope"]),
        ("summary~'dot product'", ["rope"]),
        ("claims~WikiText", ["alibi"]),
        ("hyperparameters~num_buckets", ["t5_bias"]),
        ("", ["alibi", "rope", "t5_bias"]),
    ],
)
def test_query(recs: list[dict[str, Any]], text: str, expected: list[str]) -> None:
    assert ids(cards.filter_records(recs, text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yeer>=2022", "unknown field 'yeer' in 'yeer>=2022'; did you mean 'year'?"),
        ("learnable", "expected an operator (<= >= != = < > ~) after 'learnable', found the end of the query"),
        ("year>=", "missing value after 'year>='"),
        ("name~'linear", "unterminated ' quote in \"name~'linear\""),
        ("year>=abc", "'year>=abc': operator '>=' needs a number, got 'abc'"),
        ("name>3", "'name>3': field 'name' is not numeric"),
        ("learnable=no", "'learnable=no': field 'learnable' is true or false, got 'no'"),
        ("coverage=surveyy", "'coverage=surveyy': 'surveyy' is not a value of 'coverage' (survey, baseline, "
                             "not_in_survey, after_survey); did you mean 'survey'?"),
        ("=3", "expected a field name at '=3' (position 1)"),
        ("year>=>2022", "unexpected operator in 'year>=>2022'"),
        ("__import__('os')", "expected an operator (<= >= != = < > ~) after '__import__', found \"('os')\""),
    ],
)
def test_query_errors(text: str, message: str) -> None:
    with pytest.raises(cards.QueryError) as err:
        cards.parse_query(text)
    assert str(err.value).split(" (fields:")[0] == message


def test_query_on_dataframe(repo: Path) -> None:
    df = cards.query("learnable=false year_venue>=2022", repo)
    assert list(df["id"]) == ["alibi", "rope"]
    frame = cards.load(repo)
    assert list(cards.query("year_venue=null", df=frame)["id"]) == []
