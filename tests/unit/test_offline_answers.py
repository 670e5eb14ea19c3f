"""The offline model answers from a passage with a statement, not the passage's heading."""

from __future__ import annotations

from nodes.offline_model import _best_sentence, terms


def test_a_heading_that_repeats_the_question_is_not_the_answer() -> None:
    passage = "# What is Switchboard?\nSwitchboard is a self-hosted server for AI agents. It runs."
    best = _best_sentence(passage, terms("What is Switchboard?"))
    assert best == "Switchboard is a self-hosted server for AI agents."


def test_a_passage_of_questions_only_still_gives_an_answer() -> None:
    assert _best_sentence("Is it fast? Is it small?", terms("is it fast")) == "Is it fast?"
