"""Sentence templates from a small grammar: rules with alternatives, slots, optional parts.

``<rule>`` is replaced by each alternative of ``rule`` in turn, so a grammar expands into
every template it can say; ``{slot}`` is filled with a phrase; ``[...]`` is dropped when a
slot inside it is empty.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Mapping

from personvl.config import read_yaml_mapping
from personvl.errors import UsageError

_RULE = re.compile(r"<([a-z_]+)>")
_SLOT = re.compile(r"\{([A-Za-z_]+)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_MAX_TEMPLATES = 200_000
START = "caption"


def default_templates_path() -> Path:
    return Path(str(resources.files("personvl.captioning") / "data" / "templates.yaml"))


def expand(rules: Mapping[str, list[str]], start: str = START, source: str = "grammar") -> tuple[str, ...]:
    """Every distinct template ``start`` expands to, in a fixed order."""
    if start not in rules:
        raise UsageError(f"{source}: no rule {start!r}")
    memo: dict[str, list[str]] = {}

    def expand_rule(name: str, trail: tuple[str, ...]) -> list[str]:
        if name in trail:
            raise UsageError(f"{source}: rule {name!r} refers to itself ({' -> '.join(trail + (name,))})")
        if name not in rules:
            raise UsageError(f"{source}: unknown rule <{name}> (used in {trail[-1]!r})")
        if name not in memo:
            results: dict[str, None] = {}
            for alternative in rules[name]:
                for text in expand_text(alternative, trail + (name,)):
                    results[text] = None
                    if len(results) > _MAX_TEMPLATES:
                        raise UsageError(f"{source}: rule {name!r} expands to more than {_MAX_TEMPLATES} templates")
            memo[name] = list(results)
        return memo[name]

    def expand_text(text: str, trail: tuple[str, ...]) -> list[str]:
        match = _RULE.search(text)
        if match is None:
            return [text]
        head, tail = text[:match.start()], text[match.end():]
        return [head + choice + rest for choice in expand_rule(match.group(1), trail)
                for rest in expand_text(tail, trail)]

    return tuple(expand_rule(start, ()))


def fill(template: str, slots: Mapping[str, str]) -> str:
    """The template with its slots filled; optional parts whose slots are empty vanish."""
    def keep(match: re.Match) -> str:
        inner = match.group(1)
        return inner if all(slots.get(name) for name in _SLOT.findall(inner)) else ""

    text = template
    while True:
        reduced = _OPTIONAL.sub(keep, text)
        if reduced == text:
            break
        text = reduced
    missing = [name for name in _SLOT.findall(text) if name not in slots]
    if missing:
        raise UsageError(f"template {template!r} uses the unknown slot {{{missing[0]}}}")
    text = _SLOT.sub(lambda m: slots[m.group(1)], text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    return text[:1].upper() + text[1:]


@lru_cache(maxsize=8)
def _read_templates(path: str) -> dict[str, tuple[str, ...]]:
    values = read_yaml_mapping(path)
    grammars = {}
    for name, spec in values.items():
        rules = spec.get("rules") if isinstance(spec, dict) else None
        if not isinstance(rules, dict) or not all(
                isinstance(v, list) and v and all(isinstance(s, str) for s in v) for v in rules.values()):
            raise UsageError(f"{path}: {name}: 'rules' must map rule names to lists of strings")
        grammars[name] = expand(rules, START, f"{path}: {name}")
    return grammars


def load_templates(grammar: str, path: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The expanded templates of ``grammar`` (``dcc`` or ``synth_pedes``) of a templates file
    (default: the shipped one)."""
    source = str(Path(path) if path is not None else default_templates_path())
    grammars = _read_templates(source)
    if grammar not in grammars:
        raise UsageError(f"{source}: no grammar {grammar!r} (it has {', '.join(grammars)})")
    return grammars[grammar]
