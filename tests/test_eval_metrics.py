"""Metric functions on cases computed by hand."""

from __future__ import annotations

import math
import sys

import pytest

from pyretro.eval import metrics
from pyretro.eval.metrics import exact_match, normalize_answer, rouge_geometric_mean, rouge_scores, token_f1


@pytest.mark.parametrize("text, want", [
    ("The  Cat, sat!", "cat sat"),
    ("an apple a day", "apple day"),
    ("Theatre anthem", "theatre anthem"),  # articles only as whole words
    ("  U.S.A.\t", "usa"),
    ("", ""),
])
def test_normalize(text, want):
    assert normalize_answer(text) == want


def test_exact_match_ignores_case_punctuation_articles_and_takes_max_over_references():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("a Riltan", ["Bontar", "riltan!"]) == 1.0
    assert exact_match("Riltan city", ["Riltan", "Bontar"]) == 0.0
    assert exact_match("", ["x"]) == 0.0
    assert exact_match("", [""]) == 1.0
    with pytest.raises(ValueError, match="reference"):
        exact_match("x", [])


def test_token_f1_by_hand():
    # pred -> [cat, sat, on, mat] (4), ref -> [cat, sat, on, red, mat] (5): common 4, P 1, R 0.8
    assert token_f1("the cat sat on mat", "a cat sat on the red mat") == pytest.approx(2 * 0.8 / 1.8)
    # repeated tokens count with multiplicity: x x y vs x y y -> common 2, P = R = 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    # max over references
    assert token_f1("blue car", ["red car", "blue car!", "car"]) == 1.0
    assert token_f1("blue car", ["red car", "car"]) == pytest.approx(2 / 3)  # P 1/2 R 1 vs P 1/2 R 1/1
    assert token_f1("", ["red"]) == 0.0 and token_f1("red", [""]) == 0.0 and token_f1("the", ["a"]) == 1.0
    assert token_f1("green", "red") == 0.0


def test_rouge_by_hand():
    s = rouge_scores("the cat sat on the mat", "the cat is on the mat")
    # unigrams: the x2, cat, on, mat shared -> 5/6; bigrams: the cat, on the, the mat -> 3/5; LCS 5 -> 5/6
    assert s["rouge1"] == pytest.approx(5 / 6) and s["rouge2"] == pytest.approx(0.6)
    assert s["rougeL"] == pytest.approx(5 / 6)
    assert rouge_geometric_mean(s) == pytest.approx((5 / 6 * 0.6 * 5 / 6) ** (1 / 3))
    multi = rouge_scores("the cat sat on the mat", ["a dog", "the cat is on the mat"])
    assert multi == pytest.approx(s)
    empty = rouge_scores("", "the cat")
    assert empty == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge_geometric_mean(empty) == 0.0
    assert rouge_scores("Cats running", "cat runs")["rouge1"] == 1.0  # Porter stemming


def test_geometric_mean_needs_all_three():
    assert rouge_geometric_mean({"rouge1": 0.5, "rouge2": 0.25, "rougeL": 0.5}) == pytest.approx(
        math.exp((2 * math.log(0.5) + math.log(0.25)) / 3))
    with pytest.raises(KeyError):
        rouge_geometric_mean({"rouge1": 0.5})


def test_missing_rouge_package_names_the_extra(monkeypatch):
    metrics._scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    try:
        with pytest.raises(ImportError, match="rouge-score"):
            rouge_scores("a", "b")
    finally:
        metrics._scorer.cache_clear()


def test_a_squad_answers_dict_is_refused_not_scored_by_its_keys():
    answers = {"text": ["Denver Broncos"], "answer_start": [177]}
    with pytest.raises(TypeError, match="mapping"):
        exact_match("text", answers)  # used to score 1.0 against the key "text"
    with pytest.raises(TypeError, match="mapping"):
        token_f1("Denver Broncos", answers)
