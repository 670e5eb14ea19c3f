"""The offline chat model: deterministic, streams tokens, calls tools, cites its sources."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from nodes.memory_extract import parse_statements
from nodes.prompts import (
    MEMORIES_HEADER,
    SECTION_HEADERS,
    SOURCES_HEADER,
    SUMMARY_HEADER,
    WARNINGS_HEADER,
)

_STOPWORD_TEXT = """
a about above after again all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not now of off on once only or other our ours out over
own same she should so some such than that the their theirs them then there these they
this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself please tell know explain give show say
does do use used using get got make like want need much many well also
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

# Every pattern here runs on user text (up to CHAT_MAX_MESSAGE_CHARS, and the model input cap)
# on the event loop, so each is linear: no pattern may rescan a run of characters from every
# position in it (32 000 brackets or unusual spaces once froze the server for seconds).
_WORD = re.compile(r"[a-z0-9]+")
_ARITHMETIC_RUN = re.compile(r"[\d\s+\-*/().%^]+")  # trimmed to [\d(] … [\d)] in Python
_URL = re.compile(r"https?://[^\s'\"<>]+")
_TIME = re.compile(
    r"\b(what time|current time|time is it|the time|what's the date|today's date|what day|"
    r"date today|today's day)\b"
)
_REMEMBER = re.compile(r"\bremember(?: that)?\s+(.+)", re.IGNORECASE)
_FORGET = re.compile(r"\bforget(?: that| about)?\s+(.+)", re.IGNORECASE)
_SEARCH = re.compile(
    r"^(?:please\s+)?(?:search|look up|find)(?: for| the knowledge base for)?\s+(.+)"
)
_PREVIOUS = re.compile(
    r"\bwhat did i (?:just )?(?:ask|say)\b|\bmy (?:last|previous) (?:question|message)\b"
)
_GREETING = re.compile(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening))\b[\s!.,]*$")
_ABOUT_ME = re.compile(r"\b(?:me|my|i|i'm|myself|about me)\b")
_ROUND_SPLIT = re.compile(r"\bthen\b|;", re.IGNORECASE)  # clauses are stripped after
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def terms(text: str) -> set[str]:
    """Content words of `text`: lower-case, stop words removed, simple plural folding."""
    found = set()
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or len(word) < 2:
            continue
        found.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return found


def second_person(fact: str) -> str:
    """Turn the user's own words ("I'm vegetarian") into how the agent says them back."""
    replacements = [
        (r"\bI'm\b", "you're"),
        (r"\bI am\b", "you are"),
        (r"\bI've\b", "you've"),
        (r"\bI\b", "you"),
        (r"\bmy\b", "your"),
        (r"\bMy\b", "Your"),
        (r"\bme\b", "you"),
        (r"\bmine\b", "yours"),
    ]
    out = fact.strip().rstrip(".!")
    for pattern, repl in replacements:
        out = re.sub(pattern, repl, out)
    return out


@dataclass(slots=True)
class _Context:
    """What the offline model reads from the system message and the tool messages."""

    summary: str = ""
    memories: list[str] = field(default_factory=list)
    sources: list[tuple[int, str, str]] = field(default_factory=list)  # (n, title, text)
    warnings: list[str] = field(default_factory=list)


def _parse_system(text: str) -> _Context:
    ctx = _Context()
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.strip() in SECTION_HEADERS:
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    ctx.summary = "\n".join(sections.get(SUMMARY_HEADER, [])).strip()
    ctx.memories = [
        line[2:].strip() for line in sections.get(MEMORIES_HEADER, []) if line.startswith("- ")
    ]
    ctx.warnings = [
        line[2:].strip() for line in sections.get(WARNINGS_HEADER, []) if line.startswith("- ")
    ]
    lines = sections.get(SOURCES_HEADER, [])
    for index, line in enumerate(lines):
        match = re.match(r"^\[(\d+)\] (.*)$", line)
        if match and index + 1 < len(lines):
            title = _without_parenthetical(match.group(2)).strip()
            ctx.sources.append((int(match.group(1)), title, lines[index + 1].strip()))
    return ctx


def _without_parenthetical(title: str) -> str:
    """`title` without a trailing "(...)" (no ")" inside) and the whitespace before it."""
    if not title.endswith(")"):
        return title
    inner_from = title.rfind(")", 0, len(title) - 1) + 1
    opening = title.find("(", inner_from, len(title) - 1)
    return title if opening < 0 else title[:opening].rstrip()


_OPERATION = re.compile(r"\d\s*[-+*/%^]\s*[\d(]|\)\s*[-+*/%^]")


def _arithmetic(text: str) -> str | None:
    """The longest arithmetic expression in `text` (a run of digits, operators, brackets and
    spaces from a digit or "(" to a digit or ")", with an operation in it), or None."""
    candidates = []
    for run in _ARITHMETIC_RUN.finditer(text.replace("\u00d7", "*").replace("\u00f7", "/")):
        chunk = run.group(0)
        start = next((i for i, c in enumerate(chunk) if c.isdecimal() or c == "("), len(chunk))
        end = next(
            (
                i
                for i in range(len(chunk) - 1, start, -1)
                if chunk[i].isdecimal() or chunk[i] == ")"
            ),
            start,
        )
        expression = chunk[start : end + 1]
        if end > start and _OPERATION.search(expression):
            candidates.append(expression.strip())
    return max(candidates, key=len) if candidates else None


def intents(question: str, tools: Sequence[str]) -> list[ToolCall]:
    """The tool calls a question asks for, in order; each clause ("... then ...") is one round."""
    calls: list[ToolCall] = []
    whole = question.strip()
    remember = _REMEMBER.search(whole)
    if remember and "remember" in tools:
        return [_call("remember", {"fact": remember.group(1).strip().rstrip(".!")})]
    forget = _FORGET.search(whole)
    if forget and "forget" in tools:
        return [_call("forget", {"fact": forget.group(1).strip().rstrip(".!?")})]
    for clause in (part.strip() for part in _ROUND_SPLIT.split(whole)):
        lowered = clause.lower().strip(" ,.")
        if not lowered:
            continue
        url = _URL.search(clause)
        expression = _arithmetic(clause)
        search = _SEARCH.search(lowered)
        if url and "http_get" in tools:
            calls.append(_call("http_get", {"url": url.group(0).rstrip(".,)")}))
        elif expression and "calculator" in tools:
            calls.append(_call("calculator", {"expression": expression}))
        elif _TIME.search(lowered) and "current_time" in tools:
            calls.append(_call("current_time", {}))
        elif search and "knowledge_search" in tools:
            calls.append(_call("knowledge_search", {"query": search.group(1).strip(" ?.")}))
    return calls


def _call(name: str, args: dict[str, Any]) -> ToolCall:
    return ToolCall(name=name, args=args, id=f"call_{uuid.uuid4().hex[:12]}", type="tool_call")


def _lower_first(text: str) -> str:
    """ "Your dog is ..." as it reads after a colon: "your dog is ..." (names keep their case)."""
    return "your" + text[4:] if text.startswith("Your") else text


def matching_memories(question: str, memories: Sequence[str]) -> list[str]:
    """The memories an answer to `question` uses: every one for a question about the user in
    general ("what do you know about me?"), else the one matching it best: the first (the
    recall ranking) among those sharing the most words with it, or, sharing none, the first
    if the question is about the user."""
    if not memories:
        return []
    lowered = question.lower()
    wanted = terms(question)
    if not wanted:
        return list(memories) if _ABOUT_ME.search(lowered) else []
    overlaps = [len(terms(memory) & wanted) for memory in memories]
    best = max(overlaps)
    if best > 0:
        return [memories[overlaps.index(best)]]
    return [memories[0]] if _ABOUT_ME.search(lowered) else []


def _best_sentence(text: str, wanted: set[str]) -> str:
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    # A heading or a question ("# What is X?") restates the query; answer with a statement.
    statements = [s for s in sentences if not s.startswith("#") and not s.endswith("?")]
    sentences = statements or sentences
    if not sentences:
        return text.strip()
    best = max(sentences, key=lambda s: (len(terms(s) & wanted), -sentences.index(s)))
    return best if best.endswith((".", "!", "?")) else best + "."


def _tool_sentence(message: ToolMessage, calls: dict[str, ToolCall]) -> str:
    call = calls.get(message.tool_call_id)
    name = message.name or (call["name"] if call else "tool")
    args: dict[str, Any] = dict(call["args"]) if call else {}
    content = message.text.strip()
    if message.status == "error":
        return f"I tried the {name} tool, but it failed: {content}"
    if name == "calculator":
        return f"{args.get('expression', 'The result')} = {content}."
    if name == "remember":
        return f"Noted — I'll remember that {second_person(str(args.get('fact', content)))}."
    if name == "current_time":
        return f"It is now {content}."
    if name == "knowledge_search":
        return f"Here is what the knowledge base says: {content}"
    return f"The {name} tool returned: {content[:500]}"


def compose_answer(messages: Sequence[BaseMessage]) -> str:
    """The offline model's final answer to the latest user message, from what it was given."""
    ctx = _Context()
    for message in messages:
        if message.type == "system":
            ctx = _parse_system(message.text)
    last_human = max((i for i, m in enumerate(messages) if m.type == "human"), default=-1)
    question = messages[last_human].text if last_human >= 0 else ""
    lowered = question.lower().strip()
    after = messages[last_human + 1 :] if last_human >= 0 else []
    calls: dict[str, ToolCall] = {}  # by call id
    for message in after:
        if isinstance(message, AIMessage):
            calls.update({c["id"] or "": c for c in message.tool_calls})
    parts: list[str] = [_tool_sentence(m, calls) for m in after if isinstance(m, ToolMessage)]
    used_tools = bool(parts)
    if _GREETING.match(lowered):
        parts.append("Hello! Ask me about the documents I know, or give me something to work out.")
    if _PREVIOUS.search(lowered):
        earlier = [m.text for m in messages[:last_human] if m.type == "human"]
        parts.append(
            f"Your previous message was: “{earlier[-1]}”."
            if earlier
            else "This is the first thing you have asked me in this conversation."
        )
    wanted = terms(question)
    memory_calls = any(c.get("name") in {"remember", "forget"} for c in calls.values())
    stated = [] if memory_calls else parse_statements(question)
    if stated:
        said = "; ".join(dict.fromkeys(_lower_first(second_person(f.text)) for f in stated))
        parts.append(f"Noted: {said}.")
    elif ctx.memories and not memory_calls and not _PREVIOUS.search(lowered):
        relevant = matching_memories(question, ctx.memories)
        if relevant:
            facts = "; ".join(_lower_first(second_person(m)) for m in relevant)
            parts.append(f"From what you've told me before: {facts}.")
    if ctx.sources and not used_tools:
        scored = sorted(
            (
                (len((terms(text) | terms(title)) & wanted), n, text)
                for n, title, text in ctx.sources
            ),
            key=lambda item: (-item[0], item[1]),
        )
        cited = [(n, text) for overlap, n, text in scored if overlap > 0][:2]
        if cited:
            sentences = " ".join(f"{_best_sentence(text, wanted)[:-1]} [{n}]." for n, text in cited)
            parts.append(f"According to the knowledge base: {sentences}")
    for warning in ctx.warnings:
        parts.append(f"(Note: {warning.rstrip('.')}.)")
    if not any(not p.startswith("(Note:") for p in parts):
        parts.insert(
            0,
            "I don't have anything to go on for that: nothing in the knowledge base or in what "
            "you've told me matches, so I'd rather not guess.",
        )
    return " ".join(parts)


def decide(messages: Sequence[BaseMessage], tools: Sequence[str]) -> AIMessage:
    """The offline model's reply: the next round of tool calls, or the final answer."""
    last_human = max((i for i, m in enumerate(messages) if m.type == "human"), default=-1)
    if tools and last_human >= 0:
        rounds_done = sum(
            1 for m in messages[last_human + 1 :] if isinstance(m, AIMessage) and m.tool_calls
        )
        wanted = intents(messages[last_human].text, tools)
        if rounds_done < len(wanted):
            return AIMessage(content="", tool_calls=[wanted[rounds_done]])
    return AIMessage(content=compose_answer(messages))


def _usage(messages: Sequence[BaseMessage], output: str) -> UsageMetadata:
    prompt = sum(len(m.text.split()) for m in messages)
    completion = len(output.split())
    return UsageMetadata(
        input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
    )


def tokens(text: str) -> list[str]:
    """Split `text` into the pieces the model streams (words with their following space)."""
    return re.findall(r"\S+\s*|\s+", text)


class OfflineChatModel(BaseChatModel):
    """A deterministic chat model that needs no network: the zero-config default.

    It calls the tools it is bound to when the user's message asks for them (arithmetic →
    `calculator`, "remember that ..." → `remember`, "what time" → `current_time`, "search ..."
    → `knowledge_search`, a URL → `http_get`; clauses joined by "then" are separate rounds), and
    otherwise answers from the tool results, the sources and the memories in its system message,
    citing sources as [n]. With nothing to go on it says so.
    """

    model_name: str = "offline"
    token_delay_s: float = 0.0
    tool_names: tuple[str, ...] = ()

    @property
    def _llm_type(self) -> str:
        return "switchboard-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """A copy of this model that may call `tools` (OpenAI tool dicts, functions, BaseTools)."""
        names = tuple(convert_to_openai_tool(t)["function"]["name"] for t in tools)
        return self.model_copy(update={"tool_names": names})

    def _result(self, messages: list[BaseMessage]) -> ChatResult:
        reply = decide(messages, self.tool_names)
        reply.usage_metadata = _usage(messages, reply.text)
        reply.response_metadata = {"model_name": self.model_name, "finish_reason": "stop"}
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(messages)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if self.token_delay_s > 0 and chunk.text:
                await asyncio.sleep(self.token_delay_s)
            if run_manager is not None and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[ChatGenerationChunk]:
        reply = decide(messages, self.tool_names)
        if reply.tool_calls:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": json.dumps(c["args"]),
                            "id": c["id"],
                            "index": i,
                            "type": "tool_call_chunk",
                        }
                        for i, c in enumerate(reply.tool_calls)
                    ],
                )
            )
        else:
            for piece in tokens(reply.text):
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=_usage(messages, reply.text),
                response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
                chunk_position="last",
            )
        )
