"""Fact extractors of the `remember` node: one interface, an offline and a model-driven one.

`FactExtractor.extract` turns what the user said into `Fact`s (subject, attribute, value);
`FactExtractor.decide` decides each fact as add / update / delete / noop against the most
similar memories already held. `OfflineExtractor` (the default) is a deterministic grammar of
first-person statements with the rules of `stores.memory.facts.decide`; `ModelExtractor` asks
the agent's chat model through structured output, as Mem0 and LangMem do. Whichever decided,
`stores.memory.facts.apply_decisions` enforces the same invariants.

Every regular expression here runs on bounded input (`MAX_STATEMENT_CHARS`, clauses of at
most `MAX_CLAUSE_CHARS`) and has no nested quantifiers, so its time is linear in the input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.constants import TAG_NOSTREAM
from pydantic import BaseModel, Field

from stores.memory.facts import USER, Decision, Fact, StoredFact, decide

log = logging.getLogger(__name__)

MAX_STATEMENT_CHARS = 2000
MAX_CLAUSE_CHARS = 300
MAX_FACTS = 8
MAX_VALUE_WORDS = 16
INLINE_CHARS = 64
"""The longest text the offline extractor parses on the event loop rather than in a worker
thread: up to ~0.1 ms here (3 µs for a greeting, 13-30 µs for one fact, 107 µs for three
facts in 63 characters), about what the thread hand-off alone costs."""


class ExtractionError(Exception):
    """The model could not extract or decide (unreachable, refused, malformed answer)."""


class FactExtractor(Protocol):
    """What the `remember` node needs from an extractor."""

    @property
    def name(self) -> str:
        """The extractor's name, "offline" or "model" (recorded in each fact's source)."""
        ...

    async def extract(self, text: str) -> list[Fact]:
        """The facts about the user that `text` states (none for questions or chatter)."""
        ...

    async def decide(
        self, candidates: Sequence[tuple[Fact, Sequence[StoredFact]]]
    ) -> list[Decision]:
        """One decision per fact, taken against that fact's neighbours."""
        ...


# -- the offline grammar ----------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_CLAUSE = re.compile(
    r",\s*(?=(?:i|i'm|i've|my)\b)|\s+(?:and|but|so)\s+(?=(?:i|i'm|i've|my)\b)", re.I
)
_QUESTION = re.compile(
    r"^(?:do|does|did|what|what's|where|when|who|whom|whose|which|why|how|can|could|would|"
    r"should|will|is|are|am|was|were|have|has|tell me|any idea)\b",
    re.I,
)
_LEADING = re.compile(
    r"^(?:actually|now|well|ok|okay|so|oh|also|and|but|btw|by the way|just so you know|fyi|"
    r"for the record|update|correction|sorry|no|yes|hey|hi|hello|please|"
    r"(?:please\s+)?(?:remember|note|keep in mind|don't forget)(?:\s+that)?)\b[\s,:;!.-]*",
    re.I,
)
_CORRECTION = re.compile(
    r"\b(?:actually|now|no longer|not anymore|anymore|any more|instead|these days|nowadays|"
    r"correction|update|changed|switched)\b",
    re.I,
)
_TRAILING = re.compile(
    r"[\s,]+(?:now|anymore|any more|instead|these days|nowadays|though|too|as well|"
    r"last (?:week|month|year)|this (?:week|month|year)|recently|yesterday|today|"
    r"a while ago|for (?:a while|years|ages))$",
    re.I,
)

_NAME = re.compile(
    r"^(?:my name is|my name's|call me|i am called|i'm called|i am named|i'm named)\s+(?P<v>.+)$",
    re.I,
)
_MY_CALLED = re.compile(
    r"^my\s+(?P<x>[\w' -]{1,60}?)\s+(?:is|are|was)\s+(?P<neg>not\s+|no longer\s+)?"
    r"(?:called|named)\s+(?P<v>.+)$",
    re.I,
)
_MY_IS = re.compile(
    r"^my\s+(?P<x>[\w' -]{1,60}?)\s+(?P<cop>is no longer|are no longer|is not|are not|"
    r"isn't|aren't|is|are|was|were)\s+(?P<v>.+)$",
    re.I,
)
_I_AM = re.compile(r"^i(?:\s+am|'m|m)\s+(?P<neg>not\s+|no longer\s+|never\s+)?(?P<rest>.+)$", re.I)
_AM_ALLERGIC = re.compile(r"^allergic to\s+(?P<v>.+)$", re.I)
_AM_FROM = re.compile(r"^(?:originally\s+)?from\s+(?P<v>.+)$", re.I)
_AM_AGE = re.compile(r"^(?P<v>\d{1,3})(?:\s+years?(?:\s+old)?)?$", re.I)
_AM_PARTNER = re.compile(r"^(?:married to|engaged to|dating)\s+(?P<v>.+)$", re.I)
_AM_WORKING = re.compile(r"^working\s+(?P<prep>at|for|as|in)\s+(?P<v>.+)$", re.I)
_AM_LIVING = re.compile(r"^(?:living|based|staying)\s+(?:in|at|near)\s+(?P<v>.+)$", re.I)
_AM_ING = re.compile(r"^(?P<verb>[a-z]{2,20}ing)\s+(?P<v>.+)$", re.I)
_AM_A = re.compile(r"^(?:a|an)\s+(?P<v>.+)$", re.I)
_HAVE = re.compile(
    r"^i\s*(?:'ve|\s+have)(?:\s+got)?\s+(?P<neg>no\s+)?(?P<v>.+)$|"
    r"^i\s+(?P<neg2>don't|do not|no longer|never)\s+have\s+(?P<v2>.+)$",
    re.I,
)
_LIVE = re.compile(
    r"^i\s+(?:now\s+|currently\s+|still\s+)?(?P<neg>don't\s+|do not\s+|no longer\s+|used to\s+)?"
    r"live\s+(?:in|at|near|on)\s+(?P<v>.+)$",
    re.I,
)
_MOVED = re.compile(
    r"^i(?:'ve|\s+have)?\s+(?:just\s+|recently\s+|finally\s+)?(?:moved|relocated)\s+"
    r"(?:to|into)\s+(?P<v>.+)$",
    re.I,
)
_WORK = re.compile(
    r"^i\s+(?:now\s+|currently\s+|still\s+)?(?P<neg>don't\s+|do not\s+|no longer\s+|used to\s+)?"
    r"work\s+(?P<prep>at|for|as|in|on)\s+(?P<v>.+)$",
    re.I,
)
_LIKE = re.compile(
    r"^i\s+(?:really\s+|also\s+|just\s+|absolutely\s+|still\s+)?"
    r"(?P<neg>don't\s+|do not\s+|no longer\s+|never\s+|can't\s+|cannot\s+)?"
    r"(?P<verb>like|love|enjoy|adore|hate|dislike|detest|stand|prefer)\s+(?P<v>.+)$",
    re.I,
)
_GENERIC = re.compile(
    r"^i\s+(?P<adv>really\s+|also\s+|usually\s+|always\s+|often\s+|sometimes\s+|now\s+|"
    r"currently\s+|still\s+|mostly\s+|never\s+|no longer\s+)?"
    r"(?P<neg>don't\s+|do not\s+|didn't\s+|did not\s+|used to\s+)?"
    r"(?P<verb>[a-z]{2,20})(?:\s+(?P<v>.+))?$",
    re.I,
)
_VALUE_LEAD = re.compile(r"^(?:now|currently|actually|still|also|really)\s+", re.I)
_ABBREVIATION = re.compile(r"\b(?:dr|mr|mrs|ms|mx|st|prof|sr|jr|e\.g|i\.e|etc|no|vs)\.$", re.I)

_NOT_FACT_VERB_TEXT = """
want wanted need needed wonder wondered think thought guess hope mean meant know knew
believe feel felt wish would will can could should might may must shall did do does am was
were is are be been just see saw said say asked ask told tell remember forgot forget got get
tried try have had has agree disagree understand suppose bet doubt heard hear look looked
noticed found went came made left took gave let will'll also really already only even
apologise apologize promise hate like love enjoy adore dislike detest prefer live work
moved relocated guess reckon expect assume imagine realise realize
"""
_NOT_FACT_VERBS = frozenset(_NOT_FACT_VERB_TEXT.split())
_EPHEMERAL_TEXT = """
sorry sure tired hungry thirsty bored busy confused glad happy sad fine ok okay good great
well back here there ready done curious afraid excited worried stuck lost late away so very
really still also just going trying looking asking thinking hoping wondering getting doing
having feeling wanting saying talking telling writing calling sending waiting leaving
coming asking about bit little lot few kidding joking serious not
"""
_EPHEMERAL = frozenset(_EPHEMERAL_TEXT.split())


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def _clean_value(value: str) -> str:
    value = _VALUE_LEAD.sub("", value.strip().strip("\"'").strip())
    for _ in range(3):
        trimmed = _TRAILING.sub("", value).strip(" ,")
        if trimmed == value:
            break
        value = trimmed
    return value.rstrip(" .,!;:")


def _fact(
    attribute: str,
    value: str,
    text: str,
    *,
    negated: bool = False,
    exclusive: bool = False,
    correction: bool = False,
) -> Fact | None:
    value = _clean_value(value)
    if not value or len(_words(value)) > MAX_VALUE_WORDS:
        return None
    return Fact(
        subject=USER,
        attribute=attribute,
        value=value,
        text=text,
        negated=negated,
        exclusive=exclusive,
        correction=correction,
    )


def _thing(phrase: str) -> str:
    """The possessed thing of "my <thing>": "dog's name" and "dog" name the same slot."""
    thing = " ".join(phrase.lower().split())
    for suffix in ("'s name", "'s names", "' name", "' names", " name", " names"):
        if thing.endswith(suffix) and len(thing) > len(suffix):
            return _singular(thing[: -len(suffix)]) + "'s name"
    return thing


def _singular(thing: str) -> str:
    """ "cats" -> "cat" (so "my cats' names" and "my cat's name" are one slot)."""
    if len(thing) > 3 and thing.endswith("s") and not thing.endswith("ss"):
        return thing[:-1]
    return thing


def _i_am(rest: str, text: str, negated: bool, correction: bool) -> list[Fact | None]:
    kw = {"negated": negated, "correction": correction}
    if m := _AM_ALLERGIC.match(rest):
        return [_fact("allergic to", m["v"], text, **kw)]
    if m := _AM_FROM.match(rest):
        return [_fact("from", m["v"], text, exclusive=True, **kw)]
    if m := _AM_AGE.match(rest):
        return [_fact("age", m["v"], text, exclusive=True, **kw)]
    if m := _AM_PARTNER.match(rest):
        return [_fact("partner", m["v"], text, exclusive=True, **kw)]
    if m := _AM_WORKING.match(rest):
        return _work(m["prep"], m["v"], text, **kw)
    if m := _AM_LIVING.match(rest):
        return [_fact("lives in", m["v"], text, exclusive=True, **kw)]
    first = _words(rest)[:1]
    if not first or first[0] in _EPHEMERAL:
        return []
    if m := _AM_ING.match(rest):
        return [_fact(m["verb"].lower(), m["v"], text, **kw)]
    if m := _AM_A.match(rest):
        head = _words(m["v"])[:1]
        return [] if not head or head[0] in _EPHEMERAL else [_fact("is a", m["v"], text, **kw)]
    return [_fact("is", rest, text, **kw)]


_AS_ROLE = re.compile(r"^(?P<place>.+?)\s+as\s+(?:an?\s+)?(?P<role>.+)$", re.I)


def _work(prep: str, value: str, text: str, **kw: bool) -> list[Fact | None]:
    prep = prep.lower()
    if prep in {"at", "for"}:
        both = _AS_ROLE.match(value)  # "I work at Globex as a data analyst"
        if both:
            return [
                _fact("works at", both["place"], text, exclusive=True, **kw),
                _fact("job", both["role"], text, exclusive=True, **kw),
            ]
        return [_fact("works at", value, text, exclusive=True, **kw)]
    if prep == "as":
        return [_fact("job", value, text, exclusive=True, **kw)]
    if prep == "in":
        return [_fact("works in", value, text, exclusive=True, **kw)]
    return [_fact("works on", value, text, **kw)]


def _negated(group: str | None) -> bool:
    return bool(group and group.strip())


_NOT_POSSESSIONS = frozenset(
    {"a question", "an idea", "no idea", "a problem", "an issue", "a doubt", "a bit", "a look"}
)


def _clause_facts(text: str, correction: bool) -> list[Fact | None]:
    if m := _NAME.match(text):
        return [_fact("name", m["v"], text, exclusive=True, correction=correction)]
    if m := _MY_CALLED.match(text):
        thing = _thing(m["x"])
        attribute = thing if thing.endswith("'s name") else f"{_singular(thing)}'s name"
        negated = _negated(m["neg"])
        return [_fact(attribute, m["v"], text, negated=negated, exclusive=True)]
    if m := _MY_IS.match(text):
        cop = m["cop"].lower()
        negated = "not" in cop or "n't" in cop or "no longer" in cop
        return [
            _fact(_thing(m["x"]), m["v"], text, negated=negated, exclusive=True,
                  correction=correction)
        ]  # fmt: skip
    if m := _LIVE.match(text):
        negated = _negated(m["neg"])
        return [
            _fact("lives in", m["v"], text, negated=negated, exclusive=True,
                  correction=correction)
        ]  # fmt: skip
    if m := _MOVED.match(text):
        return [_fact("lives in", m["v"], text, exclusive=True, correction=True)]
    if m := _WORK.match(text):
        return _work(m["prep"], m["v"], text, negated=_negated(m["neg"]), correction=correction)
    if m := _I_AM.match(text):
        return _i_am(m["rest"], text, _negated(m["neg"]), correction)
    if m := _HAVE.match(text):
        value = m["v"] if m["v"] is not None else m["v2"]
        head = _words(value)[:2]
        if not head or head[0] in {"to", "been", "just", "had"}:
            return []
        if " ".join(head) in _NOT_POSSESSIONS:
            return []
        negated = _negated(m["neg"]) or _negated(m["neg2"])
        return [_fact("has", value, text, negated=negated, correction=correction)]
    if m := _LIKE.match(text):
        verb = m["verb"].lower()
        if verb == "stand":  # only "I can't stand X" says something about liking
            if (m["neg"] or "").strip().lower() not in {"can't", "cannot"}:
                return []
            negated = True
        else:
            negated = _negated(m["neg"]) != (verb in {"hate", "dislike", "detest"})
        attribute = "prefers" if verb == "prefer" else "likes"
        return [_fact(attribute, m["v"], text, negated=negated, correction=correction)]
    if m := _GENERIC.match(text):
        verb = m["verb"].lower()
        if verb in _NOT_FACT_VERBS:
            return []
        adverb = (m["adv"] or "").strip().lower()
        negated = _negated(m["neg"]) or adverb in {"never", "no longer"}
        if m["v"] is None:  # "I don't smoke", "I cycle"
            return [_fact("does", verb, text, negated=negated, correction=correction)]
        return [_fact(verb, m["v"], text, negated=negated, correction=correction)]
    return []


def parse_clause(clause: str, *, correction: bool = False) -> list[Fact]:
    """The facts one first-person clause states ("my dog is called Rex"): usually one."""
    text = " ".join(clause.split()).rstrip(" .!;:,")
    if not text or len(text) > MAX_CLAUSE_CHARS:
        return []
    correction = correction or bool(_CORRECTION.search(text))
    return [f for f in _clause_facts(text, correction) if f is not None]


def _strip_leading(clause: str) -> str:
    for _ in range(4):
        stripped = _LEADING.sub("", clause, count=1).lstrip()
        if stripped == clause:
            break
        clause = stripped
    return clause


def _sentences(text: str) -> list[str]:
    """`text` cut into sentences, not after "Dr." and other abbreviations."""
    pieces = _SENTENCE.split(text)
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _ABBREVIATION.search(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return sentences


def parse_statements(text: str) -> list[Fact]:
    """Every fact the user states about themselves in `text` (questions are skipped).

    Reads at most `MAX_STATEMENT_CHARS` characters and returns at most `MAX_FACTS` facts. A
    correction word ("actually", "now", "no longer", ...) marks its clause, and a clause that
    is only such a word ("Actually, I moved to Porto") marks the next one.
    """
    text = text[:MAX_STATEMENT_CHARS].translate(_APOSTROPHES)
    found: list[Fact] = []
    for sentence in _sentences(text):
        sentence = " ".join(sentence.split())
        if not sentence or sentence.endswith("?"):
            continue
        carried = False
        for part in _CLAUSE.split(sentence):
            marked = bool(_CORRECTION.search(part))
            clause = _strip_leading(part.strip())
            if not clause:
                carried = carried or marked
                continue
            if _QUESTION.match(clause):
                carried = False
                continue
            found.extend(parse_clause(clause, correction=carried or marked))
            carried = False
            if len(found) >= MAX_FACTS:
                return found[:MAX_FACTS]
    return found


def first_fact(text: str) -> Fact | None:
    """The first fact `text` states, if the grammar reads one (how the API structures a
    memory a user writes as text)."""
    found = parse_statements(text)
    return found[0] if found else None


def note(text: str) -> Fact | None:
    """A statement the grammar does not parse, kept as a free note of the user (the
    `remember` tool's fallback: what it is asked to remember is always kept)."""
    text = " ".join(text[:MAX_STATEMENT_CHARS].split()).rstrip(" .!")
    if not text:
        return None
    return Fact(subject=USER, attribute="note", value=text, text=text)


@dataclass(frozen=True, slots=True)
class OfflineExtractor:
    """The deterministic extractor: the first-person grammar, then `facts.decide`."""

    name: str = "offline"

    async def extract(self, text: str) -> list[Fact]:
        """Facts of the first-person statements in `text` (parsed off the event loop, unless
        it is at most `INLINE_CHARS` long)."""
        if len(text) <= INLINE_CHARS:
            return parse_statements(text)
        return await asyncio.to_thread(parse_statements, text)

    async def decide(
        self, candidates: Sequence[tuple[Fact, Sequence[StoredFact]]]
    ) -> list[Decision]:
        """`facts.decide` for each fact."""
        return [decide(fact, found) for fact, found in candidates]


# -- the model-driven extractor ---------------------------------------------------------------

EXTRACT_INSTRUCTIONS = """\
You extract durable facts about the user from the user's message, for a long-term memory.
Return only facts the user states about themselves or their life (people, pets, places,
work, preferences, health, plans); none for questions, requests or small talk.
For each fact give:
- subject: "user", or who the fact is about, e.g. "user's dog", "user's manager";
- attribute: a short lower-case name of the property, e.g. "lives in", "name", "employer",
  "favourite colour", "likes", "allergic to";
- value: the value, in the user's words;
- negated: true when the user says it is not (or no longer) so;
- exclusive: true when the attribute holds one value at a time (home city, employer, age,
  favourite colour), false when the user may have several (likes, allergies, languages);
- correction: true when the user says it replaces something said before ("actually",
  "now", "no longer", "I moved to");
- statement: the fact as one short first-person sentence, e.g. "I live in Porto".
"""

DECIDE_INSTRUCTIONS = """\
You maintain a long-term memory of facts about the user. For each new fact, compare it with
the existing memories listed with it (with how similar in meaning each is, 0-1, and when it
was last said) and decide one action:
- "add": it is new information;
- "update": it replaces an existing memory (a changed value, a correction, a more precise
  version); give that memory's id as target;
- "delete": it shows an existing memory is no longer true and should be forgotten; give its id;
- "noop": it is already known (the same fact, maybe worded differently); give its id, or null.
Use only the ids listed. Answer with one decision per fact id.
"""


class ExtractedFact(BaseModel):
    """One fact as the model states it."""

    subject: str = Field(description='Who it is about: "user", or e.g. "user\'s dog".')
    attribute: str = Field(description='Property name, e.g. "lives in", "favourite colour".')
    value: str = Field(description="The value, in the user's words.")
    negated: bool = Field(description="The user says it is not, or no longer, so.")
    exclusive: bool = Field(description="The attribute holds one value at a time.")
    correction: bool = Field(
        description='The user says it replaces something said before ("actually", "now").'
    )
    statement: str = Field(description="The fact as a short first-person sentence.")


class ExtractedFacts(BaseModel):
    """The facts found in one message (an empty list when there are none)."""

    facts: list[ExtractedFact]


class MemoryDecision(BaseModel):
    """What to do with one new fact."""

    fact_id: str = Field(description='The new fact\'s id, e.g. "f0".')
    action: Literal["add", "update", "delete", "noop"]
    target: str | None = Field(description='The existing memory\'s id, e.g. "m1", or null.')


class MemoryDecisions(BaseModel):
    """One decision per new fact."""

    decisions: list[MemoryDecision]


_Answer = TypeVar("_Answer", ExtractedFacts, MemoryDecisions)
_SELF_WORDS = re.compile(r"\b(?:i|i'm|i've|i'd|me|my|mine|myself|we|our|us)\b", re.I)


def fact_json(fact: Fact) -> dict[str, Any]:
    """A fact as the model reads and writes it (the fields of `ExtractedFact`)."""
    return {
        "subject": fact.subject,
        "attribute": fact.attribute,
        "value": fact.value,
        "negated": fact.negated,
        "exclusive": fact.exclusive,
        "correction": fact.correction,
        "statement": fact.text,
    }


def fact_from_json(data: Mapping[str, Any]) -> Fact:
    """The fact of `fact_json` (or of an `ExtractedFact`)."""
    return Fact(
        subject=str(data.get("subject") or USER),
        attribute=str(data["attribute"]),
        value=str(data["value"]),
        text=str(data["statement"]),
        negated=bool(data.get("negated", False)),
        exclusive=bool(data.get("exclusive", False)),
        correction=bool(data.get("correction", False)),
    )


def _model_fact(raw: ExtractedFact) -> Fact | None:
    data = raw.model_dump()
    if not raw.value.strip() or not raw.attribute.strip():
        return None
    data["statement"] = raw.statement.strip() or f"{raw.subject} {raw.attribute}: {raw.value}"
    return fact_from_json(data)


def _memory_json(stored: StoredFact) -> dict[str, Any]:
    return {
        **fact_json(stored.fact),
        "similarity": None if stored.score is None else round(stored.score, 3),
        "updated_at": stored.updated_at.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class ModelExtractor:
    """Extraction and decisions by a chat model through structured output (json_schema).

    Messages with no first-person word are skipped without a call; the decision call is
    made only when some fact has neighbours (with none, every fact is added).
    """

    model: BaseChatModel
    name: str = "model"

    async def extract(self, text: str) -> list[Fact]:
        """The facts the model finds in `text` (bounded to `MAX_STATEMENT_CHARS`)."""
        text = text[:MAX_STATEMENT_CHARS]
        if not _SELF_WORDS.search(text):
            return []
        result = await self._ask(
            ExtractedFacts, [SystemMessage(EXTRACT_INSTRUCTIONS), HumanMessage(text)]
        )
        return [f for raw in result.facts[:MAX_FACTS] if (f := _model_fact(raw)) is not None]

    async def _ask(self, schema: type[_Answer], messages: list[BaseMessage]) -> _Answer:
        runnable = self.model.with_structured_output(schema, method="json_schema")
        try:
            result = await runnable.ainvoke(messages, config={"tags": [TAG_NOSTREAM]})
        except Exception as error:  # transport, refusal, parsing: the caller falls back
            raise ExtractionError(f"{schema.__name__}: {type(error).__name__}: {error}") from error
        if not isinstance(result, schema):
            raise ExtractionError(f"the model answered {type(result).__name__}, not {schema}")
        return result

    async def decide(
        self, candidates: Sequence[tuple[Fact, Sequence[StoredFact]]]
    ) -> list[Decision]:
        """The model's decision for each fact; facts without neighbours are added."""
        if not any(found for _, found in candidates):
            return [Decision("add", fact) for fact, _ in candidates]
        ids: dict[str, str] = {}  # short id -> item key: the model never sees or invents keys
        keys: dict[str, str] = {}
        payload: list[dict[str, Any]] = []
        for index, (fact, found) in enumerate(candidates):
            memories = []
            for stored in found:
                if stored.key not in keys:
                    short = f"m{len(keys)}"
                    keys[stored.key] = short
                    ids[short] = stored.key
                memories.append({"id": keys[stored.key], **_memory_json(stored)})
            payload.append({"id": f"f{index}", **fact_json(fact), "existing_memories": memories})
        result = await self._ask(
            MemoryDecisions,
            [
                SystemMessage(DECIDE_INSTRUCTIONS),
                HumanMessage(json.dumps({"new_facts": payload}, ensure_ascii=False)),
            ],
        )
        chosen = {d.fact_id: d for d in result.decisions}
        decisions: list[Decision] = []
        for index, (fact, found) in enumerate(candidates):
            answer = chosen.get(f"f{index}")
            if answer is None:  # not decided by the model: the offline rules decide
                log.info("the model gave no decision for fact f%d; using the offline rules", index)
                decisions.append(decide(fact, found))
                continue
            target = ids.get(answer.target) if answer.target else None
            decisions.append(Decision(answer.action, fact, target))
        return decisions
