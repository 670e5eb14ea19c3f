"""Structure-aware chunking: sections first, then paragraphs, sized in tokens, prefix counted."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from stores.chunking import Chunker, Section, embedded_text, prefix


def words(texts: Sequence[str]) -> list[int]:
    """A token counter that counts whitespace-separated words (a stand-in for word pieces)."""
    return [len(text.split()) for text in texts]


def sentence(n: int, word: str = "word") -> str:
    return " ".join([word] * (n - 1)) + " end."


def test_prefix_is_the_title_then_the_heading_path_without_repeating_the_title() -> None:
    assert prefix("Guide", ("Guide", "Install", "Linux")) == "Guide > Install > Linux"
    assert prefix("", ("Install",)) == "Install"
    assert embedded_text("Guide", ("Setup",), "Run it.") == "Guide > Setup\nRun it."
    assert embedded_text("", (), "Run it.") == "Run it."


def test_every_chunk_with_its_prefix_fits_the_budget() -> None:
    chunker = Chunker(size=40, count_tokens=words)
    sections = [
        Section(("Install",), "\n\n".join(sentence(12) for _ in range(9))),
        Section(("Install", "Linux"), sentence(70)),  # one sentence over budget: by words
        Section(("Use",), " ".join(sentence(8) for _ in range(12))),  # one long paragraph
    ]
    chunks = chunker.split(sections, title="A Guide")
    assert len(chunks) > 5
    for chunk in chunks:
        assert words([chunk.embedded])[0] <= 40
        assert chunk.embedded.startswith("A Guide > ")
    text = " ".join(c.text for c in chunks).split()
    original = " ".join(s.text for s in sections).split()
    assert text == original  # nothing lost, nothing repeated


def test_chunks_carry_their_heading_path_and_large_sections_stay_apart() -> None:
    chunker = Chunker(size=60, count_tokens=words)
    sections = [
        Section(("Brakes",), sentence(40, "brake")),
        Section(("Gears",), sentence(40, "gear")),
    ]
    chunks = chunker.split(sections, title="Bike")
    assert [c.path for c in chunks] == [("Brakes",), ("Gears",)]
    assert chunks[1].embedded == "Bike > Gears\n" + sentence(40, "gear")


def test_small_sections_share_a_chunk_under_their_common_path() -> None:
    chunker = Chunker(size=60, count_tokens=words)
    sections = [
        Section(("Volcanoes",), sentence(10)),
        Section(("Volcanoes", "More"), "- lava\n- ash"),
    ]
    (chunk,) = chunker.split(sections, title="Volcanoes")
    assert chunk.path == ("Volcanoes",)
    assert chunk.text.endswith("More\n- lava\n- ash")


def test_a_long_heading_path_is_shortened_to_leave_room_for_text() -> None:
    chunker = Chunker(size=40, count_tokens=words)
    path = tuple(f"level {i} heading" for i in range(8))
    (chunk,) = chunker.split([Section(path, sentence(20))], title="Title")
    assert words([chunk.embedded])[0] <= 40
    assert chunk.path == path  # the payload keeps the whole path
    assert chunk.embedded.splitlines()[0].endswith("level 7 heading")


def test_size_is_capped_by_what_the_model_reads() -> None:
    assert Chunker(size=1000, count_tokens=words, max_tokens=254).size == 254
    with pytest.raises(ValueError, match="at least 16"):
        Chunker(size=8, count_tokens=words)


def test_headings_without_text_still_give_a_chunk() -> None:
    chunker = Chunker(size=60, count_tokens=words)
    chunks = chunker.split([Section(("Only",), ""), Section(("Only", "Headings"), "")], title="T")
    assert [c.text for c in chunks] == ["Only\n\nOnly > Headings"]


@pytest.mark.timeout(60)
def test_hostile_text_is_chunked_in_linear_time() -> None:
    chunker = Chunker(size=64, count_tokens=words)
    hostile = [
        "." * 200_000,
        " " * 200_000 + "x",
        "a." + " " * 200_000 + "b",
        "\n \n" * 70_000,
        "x" * 300_000,
    ]
    for text in hostile:
        chunks = chunker.split([Section(("H",), text)], title="T")
        assert all(words([c.embedded])[0] <= 64 for c in chunks)
