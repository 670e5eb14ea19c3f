"""The facts of the memory evaluation: statements, later questions, and what a right answer holds.

Written by hand for this harness. Each persona is one user. Every statement is sent in a new
conversation, then every question in another new conversation of the same user. The tuning
personas were used while building the extractor and recall; the held-out ones were written
before any of them was run and were not used to tune anything (`held_out=True`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["fact", "update", "negation", "duplicate"]


@dataclass(frozen=True, slots=True)
class Case:
    """One fact: said (`said`, in order, each in its own conversation), then asked about.

    A right answer holds one of `expect` and none of `stale`; `markers` are the words that
    show this fact in an answer (to count answers to other questions that carry it).
    """

    kind: Kind
    said: tuple[str, ...]
    question: str
    expect: tuple[str, ...]
    markers: tuple[str, ...]
    stale: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Persona:
    """One user: facts, and questions about things they never said (`distractors`)."""

    name: str
    cases: tuple[Case, ...]
    distractors: tuple[str, ...] = ()
    held_out: bool = False
    facts: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "facts", len(self.cases))


def fact(said: str, question: str, expect: str, *markers: str) -> Case:
    """A fact said once."""
    return Case("fact", (said,), question, (expect,), (expect, *markers))


MAYA = Persona(
    "maya",
    (
        fact("My favourite colour is teal.", "What's my favourite colour?", "teal"),
        fact("My dog's name is Biscuit.", "What is my dog called?", "Biscuit"),
        fact("My birthday is on the 14th of March.", "When is my birthday?", "March"),
        fact("My manager is Priya Raman.", "Who is my manager?", "Priya"),
        Case(
            "update",
            ("I live in Lisbon.", "Actually, I moved to Porto last month."),
            "Which city do I live in?",
            ("Porto",),
            ("Porto", "Lisbon"),
            stale=("Lisbon",),
        ),
        fact("I work at Globex as a data analyst.", "Where do I work?", "Globex", "analyst"),
        fact("I'm allergic to shellfish.", "Am I allergic to anything?", "shellfish"),
        fact("I like jazz.", "What kind of music do I like?", "jazz"),
        Case(
            "negation",
            ("I drink coffee every morning.", "I don't drink coffee anymore."),
            "Do I drink coffee?",
            ("don't drink coffee", "no longer"),
            ("coffee",),
            stale=("every morning",),
        ),
        Case(
            "duplicate",
            ("I have two cats named Miso and Tofu.", "My cats are called Miso and Tofu."),
            "What are my cats' names?",
            ("Miso",),
            ("Miso", "Tofu"),
        ),
        fact("I prefer aisle seats on flights.", "Which seat do I prefer on a plane?", "aisle"),
        fact("I'm learning Japanese.", "What language am I learning?", "Japanese"),
        Case(
            "update",
            ("I'm vegetarian.", "Actually I'm vegan now."),
            "What is my diet?",
            ("vegan",),
            ("vegan", "vegetarian"),
            stale=("vegetarian",),
        ),
    ),
    distractors=(
        "What is my blood type?",
        "What's my favourite food?",
        "What's my sister's name?",
        "Which car do I drive?",
    ),
)

TOM = Persona(
    "tom",
    (
        Case(
            "update",
            ("I work as a nurse.", "Now I work as a paramedic."),
            "What is my job?",
            ("paramedic",),
            ("paramedic", "nurse"),
            stale=("nurse",),
        ),
        fact("My wife's name is Elena.", "What's my wife's name?", "Elena"),
        fact("I play tennis on Sundays.", "What sport do I play?", "tennis"),
        fact("I drive a red Volvo.", "What car do I drive?", "Volvo"),
        fact("I'm from Ireland.", "Where am I from?", "Ireland"),
        Case(
            "negation",
            ("I don't eat pork.",),
            "Is there any meat I avoid?",
            ("pork",),
            ("pork",),
        ),
        fact("My favourite book is Dune.", "What's my favourite book?", "Dune"),
        fact("I have a daughter called Nora.", "What's my daughter's name?", "Nora"),
        fact("I speak French and German.", "Which languages do I speak?", "French", "German"),
        Case(
            "update",
            ("My phone is a Pixel 7.", "My phone is now an iPhone 15."),
            "What phone do I have?",
            ("iPhone",),
            ("iPhone", "Pixel"),
            stale=("Pixel",),
        ),
        fact("I'm 41 years old.", "How old am I?", "41"),
        fact("I love hiking in the mountains.", "What do I enjoy doing outdoors?", "hiking"),
        Case(
            "negation",
            ("I don't smoke.",),
            "Do I smoke?",
            ("don't smoke",),
            ("smoke",),
        ),
    ),
    distractors=(
        "What's my favourite movie?",
        "Where did I go to university?",
        "What's my cat's name?",
        "What time do I usually wake up?",
    ),
)

ANA = Persona(
    "ana",
    (
        fact("My name is Ana Costa.", "What's my name?", "Ana"),
        fact("I live in Berlin.", "Where do I live?", "Berlin"),
        Case(
            "update",
            ("My favourite food is ramen.", "Actually my favourite food is sushi."),
            "What's my favourite food?",
            ("sushi",),
            ("sushi", "ramen"),
            stale=("ramen",),
        ),
        fact("I'm training for a marathon.", "What am I training for?", "marathon"),
        fact("I have a peanut allergy.", "What am I allergic to?", "peanut"),
        Case(
            "duplicate",
            ("My son's name is Leo.", "My son is called Leo."),
            "What's my son's name?",
            ("Leo",),
            ("Leo",),
        ),
        Case(
            "update",
            ("I work at Initech.", "I no longer work at Initech, I work at Hooli now."),
            "Where do I work?",
            ("Hooli",),
            ("Hooli", "Initech"),
            stale=("Initech",),
        ),
        fact("I prefer tea over coffee.", "Do I prefer tea or coffee?", "prefer tea"),
        fact("My car is a blue Toyota.", "What colour is my car?", "blue", "Toyota"),
        fact("I enjoy painting watercolours.", "What's my hobby?", "watercolour", "painting"),
        fact("I have two brothers.", "How many brothers do I have?", "two brothers"),
        fact("My doctor is Dr. Okafor.", "Who is my doctor?", "Okafor"),
        Case(
            "negation",
            ("I'm not a morning person.",),
            "Am I a morning person?",
            ("not a morning person",),
            ("morning person",),
        ),
    ),
    distractors=(
        "What's my dog's name?",
        "What's my husband's name?",
        "Which football team do I support?",
        "What is my favourite colour?",
    ),
)

SAM = Persona(
    "sam",
    (
        fact("My cat is named Pepper.", "What is my cat's name?", "Pepper"),
        Case(
            "update",
            ("I live in Manchester.", "I've moved to Leeds."),
            "What city do I live in now?",
            ("Leeds",),
            ("Leeds", "Manchester"),
            stale=("Manchester",),
        ),
        fact("I'm allergic to penicillin.", "Which medicine am I allergic to?", "penicillin"),
        fact("My favourite band is Radiohead.", "Which band do I like most?", "Radiohead"),
        fact("I work as an architect.", "What do I do for a living?", "architect"),
        Case(
            "negation",
            ("I don't drink alcohol.",),
            "Do I drink alcohol?",
            ("don't drink alcohol",),
            ("alcohol",),
        ),
        fact("My partner's name is Jordan.", "What's my partner's name?", "Jordan"),
        Case(
            "duplicate",
            ("I like playing chess.", "I enjoy playing chess."),
            "What game do I like to play?",
            ("chess",),
            ("chess",),
        ),
        fact("I'm left-handed.", "Which hand do I write with?", "left"),
        Case(
            "update",
            ("My favourite season is autumn.", "My favourite season is now spring."),
            "What's my favourite season?",
            ("spring",),
            ("spring", "autumn"),
            stale=("autumn",),
        ),
    ),
    distractors=(
        "What is my blood type?",
        "What's my brother's name?",
        "What car do I drive?",
    ),
    held_out=True,
)

LENA = Persona(
    "lena",
    (
        fact("I grew up in Vienna.", "Where did I grow up?", "Vienna"),
        fact("My employer is Siemens.", "Who do I work for?", "Siemens"),
        fact("I have a parrot called Kiwi.", "What's my parrot's name?", "Kiwi"),
        fact("I'm studying medicine.", "What am I studying?", "medicine"),
        Case(
            "update",
            ("I prefer window seats.", "Actually, I prefer aisle seats now."),
            "Which seat do I prefer on flights?",
            ("aisle",),
            ("aisle", "window"),
            stale=("window",),
        ),
        fact("I hate mushrooms.", "Which food do I dislike?", "mushrooms"),
        fact("My daughter is called Mila.", "What is my daughter's name?", "Mila"),
        fact("I cycle to work every day.", "How do I get to work?", "cycle"),
        Case(
            "negation",
            ("I'm not married.",),
            "Am I married?",
            ("not married",),
            ("married",),
        ),
        fact("My shoe size is 39.", "What is my shoe size?", "39"),
    ),
    distractors=(
        "What's my favourite colour?",
        "What is my son's name?",
        "Where do I live?",
    ),
    held_out=True,
)

PERSONAS: tuple[Persona, ...] = (MAYA, TOM, ANA, SAM, LENA)
