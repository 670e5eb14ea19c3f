"""Structure-aware chunking: sections (headings, pages), then paragraphs, sized in model tokens.

A document arrives as sections, each with its heading path. A chunk never crosses a section;
inside one, whole paragraphs are packed until the token budget is full; a paragraph over budget
is cut at sentence ends, a sentence over budget at word boundaries. What gets embedded is the
chunk behind a one-line prefix of the title and the heading path, and the budget counts it.
Every pattern here is linear in its input (no nested or overlapping quantifiers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from stores.embeddings import TokenCounter

# Bump when chunk boundaries or the embedded text change: collections built by another
# version are reported stale and `switchboard reindex` rebuilds them.
CHUNKER_VERSION = "structure-v1"
PATH_SEPARATOR = " > "
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WHITESPACE = re.compile(r"\s+")
# A word longer than this many characters is cut into pieces of this size.
_LONGEST_WORD = 200


@dataclass(frozen=True, slots=True)
class Section:
    """Text under one heading path (a page of a PDF, a markdown or HTML heading)."""

    path: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document: its text, its heading path, and the text that gets embedded."""

    text: str
    path: tuple[str, ...]
    embedded: str


def embedded_text(title: str, path: Sequence[str], text: str) -> str:
    """The text the embedder and the lexical index see: title, heading path, then the chunk."""
    heading = prefix(title, path)
    return f"{heading}\n{text}" if heading else text


def prefix(title: str, path: Sequence[str]) -> str:
    """`Title > H1 > H2`, without a first heading that only repeats the title."""
    parts = [title.strip()] if title.strip() else []
    for part in path:
        if part.strip() and (parts == [] or part.strip().lower() != parts[-1].lower()):
            parts.append(part.strip())
    return PATH_SEPARATOR.join(parts)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


def _words(text: str) -> list[str]:
    words: list[str] = []
    for word in _WHITESPACE.split(text):
        words.extend(word[i : i + _LONGEST_WORD] for i in range(0, len(word), _LONGEST_WORD))
    return [w for w in words if w]


class Chunker:
    """Cuts sections into chunks of at most `size` model tokens, prefix included.

    Args:
        size: Tokens per embedded chunk (title and heading path included).
        count_tokens: The embedder's token counter.
        max_tokens: The most the embedder reads (specials excluded); `size` is capped to it.
    """

    def __init__(
        self, *, size: int, count_tokens: TokenCounter, max_tokens: int | None = None
    ) -> None:
        if size < 16:
            raise ValueError(f"chunk size must be at least 16 tokens, got {size}")
        self.size = min(size, max_tokens) if max_tokens else size
        self.count_tokens = count_tokens

    def _pieces(self, paragraph: str, budget: int) -> list[tuple[str, int]]:
        """`paragraph` as (text, tokens) pieces of at most `budget` tokens each."""
        (tokens,) = self.count_tokens([paragraph])
        if tokens <= budget:
            return [(paragraph, tokens)]
        sentences = [s for s in _SENTENCE_END.split(paragraph) if s.strip()]
        if len(sentences) > 1:
            units = list(zip(sentences, self.count_tokens(sentences), strict=True))
        else:
            words = _words(paragraph)
            units = list(zip(words, self.count_tokens(words), strict=True))
        out: list[tuple[str, int]] = []
        for unit, count in units:
            if count > budget:  # a sentence over budget: by words
                out.extend(self._pack(self._word_units(unit), budget, joiner=" "))
            else:
                out.append((unit, count))
        return self._pack(out, budget, joiner=" ")

    def _word_units(self, sentence: str) -> list[tuple[str, int]]:
        words = _words(sentence)
        return list(zip(words, self.count_tokens(words), strict=True))

    @staticmethod
    def _pack(
        units: Sequence[tuple[str, int]], budget: int, *, joiner: str
    ) -> list[tuple[str, int]]:
        """Greedily join consecutive units while they fit in `budget` tokens."""
        packed: list[tuple[str, int]] = []
        texts: list[str] = []
        used = 0
        for text, count in units:
            if texts and used + count > budget:
                packed.append((joiner.join(texts), used))
                texts, used = [], 0
            texts.append(text)
            used += count
        if texts:
            packed.append((joiner.join(texts), used))
        return packed

    def _budget(self, title: str, path: tuple[str, ...]) -> tuple[str, tuple[str, ...], int]:
        """Shorten the heading path until the prefix leaves at least 3/4 of the size."""
        while True:
            heading = prefix(title, path)
            used = self.count_tokens([heading])[0] + 1 if heading else 0
            if used <= self.size // 4 or not heading:
                return title, path, self.size - used
            if path:
                path = path[1:]
            else:
                title = ""

    def split(self, sections: Sequence[Section], *, title: str) -> list[Chunk]:
        """The chunks of a document, in reading order.

        A chunk starts at a section boundary unless the chunk so far fills less than half the
        budget and the next section's first piece fits: then small sections share a chunk,
        under their common heading path, each one's own heading kept as a line of the text.

        Args:
            sections: Its sections, in order.
            title: Its title (part of every embedded text).

        Returns:
            At least one chunk when any section holds text.
        """
        chunks: list[Chunk] = []
        texts: list[str] = []
        used, budget = 0, self.size
        path: tuple[str, ...] = ()

        def flush() -> None:
            nonlocal texts, used
            if texts:
                short_title, short_path, _ = self._budget(title, path)
                text = "\n\n".join(texts)
                chunks.append(Chunk(text, path, embedded_text(short_title, short_path, text)))
            texts, used = [], 0

        for section in sections:
            paragraphs = _paragraphs(section.text)
            if not paragraphs:
                continue
            _, _, section_budget = self._budget(title, section.path)
            pieces = [piece for p in paragraphs for piece in self._pieces(p, section_budget)]
            for position, (text, count) in enumerate(pieces):
                if texts and position == 0 and section.path != path:
                    common = _common(path, section.path)
                    heading = PATH_SEPARATOR.join(section.path[len(common) :])
                    extra = count + (self.count_tokens([heading])[0] + 1 if heading else 0)
                    if used < budget // 2 and used + extra <= min(budget, section_budget):
                        texts.append(f"{heading}\n{text}" if heading else text)
                        used += extra
                        path = common
                        continue
                    flush()
                elif texts and used + count > budget:
                    flush()
                if not texts:
                    path, budget = section.path, section_budget
                texts.append(text)
                used += count
        flush()
        if not chunks:  # headings and nothing else: index the headings
            headings = [PATH_SEPARATOR.join(s.path) for s in sections if s.path]
            if headings:
                text = "\n\n".join(headings)
                chunks.append(Chunk(text=text, path=(), embedded=embedded_text(title, (), text)))
        return chunks


def _common(left: Sequence[str], right: Sequence[str]) -> tuple[str, ...]:
    """The longest common beginning of two heading paths."""
    common: list[str] = []
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        common.append(a)
    return tuple(common)
