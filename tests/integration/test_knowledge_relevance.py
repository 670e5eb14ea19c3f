"""Relevance: over distinct topics, paraphrased questions rank the right document first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stores.embeddings import SharedEmbeddings
from stores.knowledge import KnowledgeBase
from tests.integration.knowledge_support import open_kb, shared_embedder, unique_collection

CORPUS: dict[str, str] = {
    "bees.md": (
        "# Honey bees\n\nA honey bee colony has one queen, thousands of female workers and a "
        "few hundred male drones. Workers forage for nectar and pollen and tell each other "
        "where flowers are with the waggle dance. Nectar is turned into honey in wax combs."
    ),
    "espresso.md": (
        "# Pulling an espresso shot\n\nGrind the coffee beans finely, tamp about 18 grams into "
        "the portafilter and push water at 93 °C through it at nine bars of pressure for 25 to "
        "30 seconds. A good shot has a layer of golden crema on top."
    ),
    "marathon.md": (
        "# Training for a marathon\n\nBuild weekly mileage slowly over sixteen to twenty weeks, "
        "with one long run each weekend that grows to about 32 km. Taper for the last three "
        "weeks so the legs are rested on race day, and practise eating gels while running."
    ),
    "tides.md": (
        "# Why the sea has tides\n\nThe gravitational pull of the Moon, and to a lesser degree "
        "the Sun, raises bulges in the oceans. As the Earth rotates, a coast passes through two "
        "bulges a day, so most places see two high and two low waters daily."
    ),
    "photosynthesis.md": (
        "# Photosynthesis\n\nPlants capture sunlight with chlorophyll in their leaves and use its "
        "energy to turn carbon dioxide and water into glucose, releasing oxygen as a by-product."
    ),
    "tax.md": (
        "# Filing an income tax return\n\nCollect your salary statements and receipts for "
        "deductible expenses, fill in the return before the deadline, and pay any tax still "
        "owed; a refund arrives if too much was withheld from your pay during the year."
    ),
    "guitar.md": (
        "# Tuning a guitar\n\nIn standard tuning the six strings, from the thickest to the "
        "thinnest, are E, A, D, G, B and E. Turn the tuning pegs until each string matches the "
        "pitch of a tuner or the fifth fret of the string below it."
    ),
    "vaccines.md": (
        "# How vaccines work\n\nA vaccine shows the immune system a harmless piece or a weakened "
        "form of a pathogen, so it makes antibodies and memory cells. If the real germ arrives "
        "later, the body recognises it and fights it off before illness sets in."
    ),
    "git.md": (
        "# Undoing a commit in git\n\nTo undo the last commit but keep its changes, run "
        "`git reset --soft HEAD~1`. To make a new commit that reverses an old one already "
        "pushed to others, use `git revert <sha>`."
    ),
    "volcanoes.md": (
        "# Volcanoes\n\nMolten rock called magma rises from deep below the crust and erupts as "
        "lava, ash and gas. Volcanoes cluster along the edges of tectonic plates, such as the "
        "Pacific Ring of Fire."
    ),
    "sourdough.md": (
        "# Sourdough bread\n\nA sourdough starter is flour and water colonised by wild yeast and "
        "bacteria. Feed it daily; mix it into dough, let the dough ferment for many hours, "
        "shape the loaf and bake it in a very hot Dutch oven."
    ),
    "chess.md": (
        "# Castling in chess\n\nCastling moves the king two squares towards a rook, and that "
        "rook to the square the king crossed. It is allowed only if neither piece has moved, "
        "the squares between are empty and the king is not in check."
    ),
}

QUESTIONS: list[tuple[str, str]] = [
    ("How do insects that make honey tell each other where the flowers are?", "bees.md"),
    ("What pressure and temperature should the water be for a strong coffee?", "espresso.md"),
    ("How should I prepare my body for a 42 km road race?", "marathon.md"),
    ("Why does the ocean rise and fall twice each day?", "tides.md"),
    ("How do green plants make sugar out of light?", "photosynthesis.md"),
    ("What paperwork do I need to declare my earnings to the government?", "tax.md"),
    ("Which notes should the strings of my six-string instrument be set to?", "guitar.md"),
    ("How does an injection train the body to resist an infection?", "vaccines.md"),
    ("How can I take back the last change I saved in my repository?", "git.md"),
    ("Where does the glowing molten rock of an eruption come from?", "volcanoes.md"),
    ("How do I keep a natural leaven alive to bake a loaf?", "sourdough.md"),
    ("When may the king and a rook swap places in one move?", "chess.md"),
]


@pytest.fixture(scope="module")
def embedder() -> SharedEmbeddings:
    """The real model, loaded once for the process."""
    return shared_embedder()


@pytest.fixture
async def corpus(
    database_url: str, tmp_path: Path, embedder: SharedEmbeddings
) -> AsyncIterator[tuple[KnowledgeBase, str]]:
    """A knowledge base holding the corpus in a collection of its own."""
    collection = unique_collection("relevance")
    async with open_kb(database_url, tmp_path / "qdrant") as kb:
        for name, text in CORPUS.items():
            await kb.ingest_bytes(text.encode(), filename=name, collection=collection)
        yield kb, collection


async def test_paraphrased_questions_rank_the_right_document_first(
    corpus: tuple[KnowledgeBase, str],
) -> None:
    kb, collection = corpus
    misses = []
    for question, expected in QUESTIONS:
        hits = await kb.search(question, k=3, collections=[collection])
        if not hits or hits[0].source != expected:
            misses.append((question, expected, [(h.source, round(h.score, 3)) for h in hits]))
    assert misses == []


async def test_every_document_of_the_corpus_is_searchable_by_its_own_title(
    corpus: tuple[KnowledgeBase, str],
) -> None:
    kb, collection = corpus
    for name, text in CORPUS.items():
        title = text.splitlines()[0].lstrip("# ")
        hits = await kb.search(title, k=1, collections=[collection])
        assert hits[0].source == name
        assert hits[0].title == title
