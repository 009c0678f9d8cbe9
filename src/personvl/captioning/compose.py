"""Combine: chosen phrases -> captions (DCC templates) and SYNTH-PEDES attribute strings and
prompt captions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from personvl.captioning.grammar import fill
from personvl.captioning.scoring import Choice
from personvl.captioning.vocabulary import Phrase, fix_articles, strip_article

SYNTH_PEDES_SLOTS = ("gender", "head", "upper", "lower", "shoes", "belongings")
UNKNOWN = "unknown"
_PRONOUNS = {"man": "He", "woman": "She"}


@dataclass(frozen=True)
class Caption:
    text: str
    template: str
    words: tuple[str, ...]    # the phrase wordings it used (for masked attribute prediction)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def write_caption(choices: Sequence[Choice], templates: Sequence[str], rng: np.random.Generator) -> Caption:
    """One caption of the chosen phrases: a random template, a random synonym per phrase."""
    by_role: dict[str, list[tuple[Phrase, str]]] = {}
    for choice in choices:
        if choice.phrase is not None and not choice.phrase.absent and choice.phrase.role is not None:
            by_role.setdefault(choice.phrase.role, []).append((choice.phrase, _pick(rng, choice.phrase.captions)))
    person = by_role.get("person", [])
    pronoun = next((p.pronoun for p, _ in person if p.pronoun), None)
    slots = {
        "age": " ".join(w for _, w in by_role.get("age", [])),
        "person": " ".join(w for _, w in person) or "person",
        "hair": _join(w for _, w in by_role.get("hair", [])),
        "clothes": _join(w for _, w in by_role.get("worn", [])),
        "actions": _join(w for _, w in by_role.get("action", [])),
        "carried": _join(w for _, w in by_role.get("carried", [])),
        "Pronoun": pronoun.capitalize() if pronoun else "The person",
    }
    template = _pick(rng, templates)
    words = tuple(strip_article(w) for role in ("age", "person", "hair", "worn", "action", "carried")
                  for _, w in by_role.get(role, []))
    return Caption(fix_articles(fill(template, slots)), template, words)


def write_captions(choices: Sequence[Choice], templates: Sequence[str], rng: np.random.Generator,
                   count: int) -> list[Caption]:
    """``count`` captions with pairwise different texts (fewer only if the grammar cannot)."""
    captions: list[Caption] = []
    for _ in range(count * 10):
        caption = write_caption(choices, templates, rng)
        if all(c.text != caption.text for c in captions):
            captions.append(caption)
        if len(captions) == count:
            break
    return captions


def synth_pedes_attributes(choices: Sequence[Choice]) -> str:
    """The 6-slot SYNTH-PEDES attribute string (gender, head, upper, lower, shoes,
    belongings; ``unknown`` where nothing was chosen) of one image's choices."""
    chosen = {c.group: c.phrase for c in choices if c.phrase is not None and not c.phrase.absent}

    def key(group: str) -> str | None:
        phrase = chosen.get(group)
        return strip_article(phrase.key) if phrase is not None else None

    gender = chosen["gender"].values.get("gender", key("gender")) if "gender" in chosen else None
    hair = chosen.get("hair_length")
    if "hat" in chosen:
        head = "hat"
    elif hair is not None and "hair_colour" in hair.values:
        head = f"{hair.values['hair_colour']} hair"
    else:
        head = key("hair_length")
    if "bag" in chosen:
        belongings = chosen["bag"].values.get("bag", key("bag"))
    else:
        belongings = "umbrella" if "umbrella" in chosen else None
    slots = [gender, head, key("upper_clothes"), key("lower_clothes"), key("shoes"), belongings]
    return ",".join(s.replace(",", " ") if s else UNKNOWN for s in slots)


def synth_pedes_caption(attribute_string: str, templates: Sequence[str], rng: np.random.Generator) -> tuple[str, str]:
    """A SYNTH-PEDES-style prompt caption of a 6-slot attribute string, and its template."""
    values = [v.strip() for v in attribute_string.split(",")]
    if len(values) != len(SYNTH_PEDES_SLOTS):
        raise ValueError(f"expected {len(SYNTH_PEDES_SLOTS)} comma-separated slots, got {attribute_string!r}")
    slots = {name: ("" if v == UNKNOWN else v) for name, v in zip(SYNTH_PEDES_SLOTS, values)}
    if slots["belongings"]:
        slots["belongings"] = "a " + slots["belongings"]
    slots["gender"] = slots["gender"] or "person"
    slots["Pronoun"] = _PRONOUNS.get(slots["gender"], "The person")
    template = _pick(rng, templates)
    return fix_articles(fill(template, slots)), template
