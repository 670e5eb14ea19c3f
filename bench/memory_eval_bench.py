"""Long-term memory evaluation: facts said in one conversation, asked about in another.

`python -m bench memory_eval` starts a real server (uvicorn, PostgreSQL, nx-27017, local
Qdrant, MiniLM) and a local OpenAI-compatible fake, and drives `/chat` over HTTP for two
agents: the offline path (offline model, offline extractor) and the model path (provider
"openai" against the fake: extraction and decisions through structured output, answers from
a model that recites every memory it is given). Each persona of `bench/memory_eval_set.py` is
one user per path; each statement goes in a new conversation, then each question in another.
It reports recall, answers carrying unrelated facts, whether updated facts win, and the cost
of a turn with memory on against an agent with memory off (same statements, same run).
`MEMORY_EVAL_SPLIT=tuning|held-out|all` (default all) picks the personas. Results go to
`bench/results/memory_eval.md`.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.chat_bench import admin_url
from bench.memory_eval_set import PERSONAS, Case, Persona
from tests.integration.chat_support import stream_chat
from tests.integration.openai_fake import running_fake_openai, settings_for
from tests.support import running_server, scratch_database

RESULTS = Path(__file__).parent / "results" / "memory_eval.md"
PATHS = ("offline", "model")


@dataclass(slots=True)
class Answer:
    """One question's answer and how it was judged."""

    persona: str
    held_out: bool
    question: str
    text: str
    recalled: list[str]
    case: Case | None  # None: a distractor
    right: bool = False
    stale: bool = False
    unrelated: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PathResult:
    """Everything measured on one path."""

    path: str
    answers: list[Answer] = field(default_factory=list)
    said_ms: list[float] = field(default_factory=list)
    asked_ms: list[float] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    stored: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


def _mentions(text: str, marker: str) -> bool:
    return re.search(r"\b" + re.escape(marker.lower()), text.lower()) is not None


def judge(answer: Answer, persona: Persona) -> None:
    """Mark `answer` right/stale and list the other facts of the persona it carries."""
    text = answer.text
    case = answer.case
    if case is not None:
        answer.right = any(e.lower() in text.lower() for e in case.expect)
        answer.stale = any(_mentions(text, s) for s in case.stale)
    others = [c for c in persona.cases if c is not case]
    answer.unrelated = [
        m for c in others for m in c.markers if _mentions(text, m) and not _owned(m, case)
    ]


def _owned(marker: str, case: Case | None) -> bool:
    """A marker that the asked fact itself also carries is not unrelated."""
    return case is not None and any(marker.lower() in m.lower() for m in case.markers)


def _chat(
    api: httpx.Client, user: str, agent: str, message: str
) -> tuple[float, dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    started = time.perf_counter()
    events = stream_chat(api, {"user_id": user, "agent_id": agent, "message": message})
    elapsed = (time.perf_counter() - started) * 1000
    data = dict(events)
    if data.get("end", {}).get("status") != "success":
        raise RuntimeError(f"turn failed for {message!r}: {data.get('error')}")
    return elapsed, data, events


def _user(api: httpx.Client, name: str) -> str:
    response = api.post(
        "/users", json={"email": f"{name}-{uuid.uuid4().hex[:8]}@example.com", "name": name}
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _agent(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/agents", json={"tools": [], **body})
    response.raise_for_status()
    return str(response.json()["id"])


def run_persona(api: httpx.Client, agent: str, persona: Persona, result: PathResult) -> None:
    """Say every statement (each in a new conversation), then ask every question."""
    user = _user(api, f"{persona.name}-{result.path}")
    rounds = max(len(case.said) for case in persona.cases)
    for index in range(rounds):  # every first statement, then every second one
        for case in persona.cases:
            if index < len(case.said):
                elapsed, _, events = _chat(api, user, agent, case.said[index])
                result.said_ms.append(elapsed)
                for name, data in events:
                    if name == "memory_saved":
                        action = str(data["action"])
                        result.actions[action] = result.actions.get(action, 0) + 1
    questions: list[tuple[str, Case | None]] = [(c.question, c) for c in persona.cases]
    questions += [(q, None) for q in persona.distractors]
    for question, asked in questions:
        elapsed, data, _ = _chat(api, user, agent, question)
        result.asked_ms.append(elapsed)
        answer = Answer(
            persona=persona.name,
            held_out=persona.held_out,
            question=question,
            text=str(data["message"]["content"]),
            recalled=list(data.get("memories", {}).get("memories", [])),
            case=asked,
        )
        judge(answer, persona)
        result.answers.append(answer)
    listing = api.get(f"/users/{user}/memories", params={"limit": 200}).json()["items"]
    values = [item["value"] for item in listing]
    active = sum(1 for v in values if v.get("status") != "retracted")
    history = sum(len(v.get("history") or []) for v in values)
    result.stored[persona.name] = (len(values), active, history, persona.facts)


def baseline(
    api: httpx.Client, agent: str, personas: Sequence[Persona]
) -> tuple[list[float], list[float]]:
    """The same statements and questions to an agent with memory off (new conversations)."""
    user = _user(api, "baseline")
    said = [
        _chat(api, user, agent, text)[0]
        for persona in personas
        for case in persona.cases
        for text in case.said
    ]
    asked = [
        _chat(api, user, agent, question)[0]
        for persona in personas
        for question in [*(c.question for c in persona.cases), *persona.distractors]
    ]
    return said, asked


@dataclass(frozen=True, slots=True)
class Scores:
    """The figures of a set of answers."""

    facts: int
    recalled: int
    questions: int
    unrelated: int
    updates: int
    updates_won: int
    updates_recalled: int
    distractors: int
    abstained: int

    @property
    def recall(self) -> float:
        """Share of fact questions answered with the right fact."""
        return self.recalled / self.facts if self.facts else 0.0

    @property
    def unrelated_rate(self) -> float:
        """Share of all answers carrying a fact the question was not about."""
        return self.unrelated / self.questions if self.questions else 0.0


def score(answers: Sequence[Answer]) -> Scores:
    """Count what `answers` got right."""
    facts = [a for a in answers if a.case is not None]
    updates = [a for a in facts if a.case is not None and a.case.stale]
    distractors = [a for a in answers if a.case is None]
    return Scores(
        facts=len(facts),
        recalled=sum(a.right for a in facts),
        questions=len(answers),
        unrelated=sum(bool(a.unrelated) for a in answers),
        updates=len(updates),
        updates_won=sum(not a.stale for a in updates),
        updates_recalled=sum(a.right and not a.stale for a in updates),
        distractors=len(distractors),
        abstained=sum(not a.unrelated for a in distractors),
    )


def _split() -> tuple[str, list[Persona]]:
    split = os.environ.get("MEMORY_EVAL_SPLIT", "all")
    if split == "tuning":
        return split, [p for p in PERSONAS if not p.held_out]
    if split == "held-out":
        return split, [p for p in PERSONAS if p.held_out]
    if split != "all":
        raise SystemExit("MEMORY_EVAL_SPLIT must be tuning, held-out or all")
    return split, list(PERSONAS)


def run() -> str:
    """Run the evaluation; returns the report."""
    split, personas = _split()
    load_before = os.getloadavg()
    results = {path: PathResult(path) for path in PATHS}
    with (
        admin_url() as admin,
        scratch_database(admin, "memory_eval") as database_url,
        tempfile.TemporaryDirectory(prefix="sb-memory-eval-") as folder,
        running_fake_openai() as (base_url, fake),
    ):
        settings = settings_for(database_url, Path(folder), base_url)
        with running_server(settings) as url, httpx.Client(base_url=url, timeout=120) as api:
            agents = {
                "offline": _agent(api, {"name": "eval-offline"}),
                "model": _agent(
                    api, {"name": "eval-model", "model": {"provider": "openai", "name": "fake"}}
                ),
            }
            memory_off = _agent(api, {"name": "eval-off", "config": {"memory_policy": "off"}})
            _chat(api, _user(api, "warm"), agents["offline"], "I like warming up.")  # model load
            for path in PATHS:
                for persona in personas:
                    print(f"{path}: {persona.name}", flush=True)
                    run_persona(api, agents[path], persona, results[path])
            base = baseline(api, memory_off, personas)
        model_calls = sum(1 for r in fake.requests if r.get("response_format"))
    load_after = os.getloadavg()
    return report(split, personas, results, base, model_calls, (load_before, load_after))


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "0/0"


def _p50(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(
    split: str,
    personas: Sequence[Persona],
    results: dict[str, PathResult],
    base: tuple[Sequence[float], Sequence[float]],
    model_calls: int,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    """The Markdown report."""
    facts = sum(p.facts for p in personas)
    held_out = [p.name for p in personas if p.held_out]
    lines = [
        "# Long-term memory: recall in new conversations",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"(CPython {platform.python_version()}), `python -m bench memory_eval`, split `{split}`: "
        f"{len(personas)} users, {facts} facts, "
        f"{sum(len(p.distractors) for p in personas)} distractor questions. "
        f"Load average before/after: {load[0][0]:.2f} / {load[1][0]:.2f} (2 shared cores).",
        "",
        "Every statement went to `/chat` in a new conversation, then every question in another "
        "new conversation of the same user, over HTTP to a real server (PostgreSQL, nx-27017, "
        "local Qdrant, MiniLM). Offline path: offline model and extractor. Model path: an agent "
        "on provider `openai` against the local fake server, so extraction and add/update/"
        "delete/noop decisions go through langchain-openai's structured output (json_schema); "
        "the fake answers those with the project's grammar and rules, and answers questions by "
        "reciting every memory in its prompt, so there an unrelated fact in an answer means "
        "recall let it into the prompt. "
        f"Held-out users (written before any run, never tuned on): {', '.join(held_out) or '-'}.",
        "",
        "| path | users | recall | answers with unrelated facts | updated facts win "
        "(old value never answered) | new value recalled | distractors answered without a fact |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, result in results.items():
        for label, chosen in (
            ("all", result.answers),
            ("tuning", [a for a in result.answers if not a.held_out]),
            ("held-out", [a for a in result.answers if a.held_out]),
        ):
            if not chosen or (label != "all" and len({a.held_out for a in result.answers}) < 2):
                continue
            s = score(chosen)
            lines.append(
                f"| {path} | {label} | {_pct(s.recalled, s.facts)} "
                f"| {_pct(s.unrelated, s.questions)} | {_pct(s.updates_won, s.updates)} "
                f"| {_pct(s.updates_recalled, s.updates)} | {_pct(s.abstained, s.distractors)} |"
            )
    lines += [
        "",
        "Targets: recall ≥ 90%, unrelated-fact answers ≤ 5%, updated facts win every time.",
        "",
        "## Consolidation",
        "",
        "| path | user | items stored | current | history entries | facts said |",
        "|---|---|---|---|---|---|",
    ]
    for path, result in results.items():
        for name, (items, active, history, said) in result.stored.items():
            lines.append(f"| {path} | {name} | {items} | {active} | {history} | {said} |")
    lines += [""]
    for path, result in results.items():
        actions = ", ".join(f"{k} {v}" for k, v in sorted(result.actions.items()))
        lines.append(f"- {path}: `memory_saved` events: {actions}.")
    lines += [
        f"- model path: {model_calls} structured-output requests reached the fake server.",
        "",
        "## Cost of a turn",
        "",
        "p50 of `/chat` turns end to end (ms), against the same statements and questions sent "
        "to an agent with memory off (offline model) in the same run.",
        "",
        "| turns | p50 ms | vs memory off |",
        "|---|---|---|",
        f"| statements, memory off (baseline) | {_p50(base[0]):.0f} | 1.00x |",
        f"| questions, memory off (baseline) | {_p50(base[1]):.0f} | 1.00x |",
    ]
    for path, result in results.items():
        for label, values, against in (
            ("statements", result.said_ms, base[0]),
            ("questions", result.asked_ms, base[1]),
        ):
            ratio = _p50(values) / _p50(against) if against else 0.0
            lines.append(f"| {label}, {path} | {_p50(values):.0f} | {ratio:.2f}x |")
    lines += ["", "## Every answer", ""]
    for path, result in results.items():
        lines += [
            f"### {path}",
            "",
            "| user | question | verdict | answer |",
            "|---|---|---|---|",
        ]
        for a in result.answers:
            lines.append(
                f"| {a.persona}{' (held-out)' if a.held_out else ''} | {a.question} "
                f"| {_verdict(a)} | {a.text.replace('|', '/')[:160]} |"
            )
        lines.append("")
    return "\n".join(lines)


def _verdict(answer: Answer) -> str:
    parts = []
    if answer.case is None:
        parts.append("distractor")
    else:
        parts.append("right" if answer.right else "MISSED")
        if answer.stale:
            parts.append("STALE")
    if answer.unrelated:
        parts.append("UNRELATED: " + ", ".join(answer.unrelated))
    return "; ".join(parts)


def main() -> None:
    """Run and write `bench/results/memory_eval.md`."""
    text = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n", encoding="utf-8")
    print(text.split("## Every answer")[0])
