"""The attribute vocabulary: groups of phrases a vision-language model scores against an image.

The default vocabulary (``data/vocabulary.yaml``) holds UniPT's 14 groups; a user's own YAML
file in the same schema replaces it (``load_vocabulary("my_vocabulary.yaml")``).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from personvl.config import read_yaml_mapping
from personvl.errors import UsageError

# Where a phrase goes in a caption (the template slots: {age} {person} {hair} {clothes}
# {carried} {actions}).
ROLES = ("age", "person", "hair", "worn", "carried", "action")
DEFAULT_PROMPT = "A photo of a person {phrase}"     # UniPT's
_PHRASE_KEYS = {"prompt", "caption", "values", "attributes", "role", "absent", "pronoun", "key"}


def default_vocabulary_path() -> Path:
    return Path(str(resources.files("personvl.captioning") / "data" / "vocabulary.yaml"))


@dataclass(frozen=True)
class Phrase:
    """One scored phrase: ``prompt`` completes the scoring prompt, ``wordings`` are every way
    of saying it there (``prompt`` first), ``captions`` the synonyms a caption may use for
    it, ``values`` the slot facts it states."""

    group: str
    key: str
    prompt: str
    captions: tuple[str, ...]
    values: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    attributes: tuple[str, ...] = ()
    role: str | None = None
    absent: bool = False
    pronoun: str | None = None
    wordings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.wordings:
            object.__setattr__(self, "wordings", (self.prompt,))


@dataclass(frozen=True)
class Group:
    name: str
    required: bool
    phrases: tuple[Phrase, ...]
    role: str | None = None

    @property
    def absent_phrase(self) -> Phrase | None:
        return next((p for p in self.phrases if p.absent), None)


@dataclass(frozen=True)
class Vocabulary:
    """Groups in scoring order. ``groups`` make the captions; ``extra_groups`` are scored
    too but only SYNTH-PEDES strings use them (the shoes slot)."""

    prompt_templates: tuple[str, ...]
    groups: tuple[Group, ...]
    extra_groups: tuple[Group, ...] = ()
    source: str = ""

    def all_groups(self, extra: bool = False) -> tuple[Group, ...]:
        return self.groups + (self.extra_groups if extra else ())

    def phrases(self, extra: bool = False) -> list[Phrase]:
        return [p for g in self.all_groups(extra) for p in g.phrases]

    def prompts(self, extra: bool = False) -> list[str]:
        """The first scoring prompt of every phrase (first template, first wording), in
        ``phrases()`` order."""
        return [ensemble[0] for ensemble in self.prompt_ensembles(extra)]

    def prompt_ensembles(self, extra: bool = False, templates: Sequence[str] | None = None) -> list[tuple[str, ...]]:
        """Per phrase (in ``phrases()`` order), every prompt that says it: each template
        (default: the vocabulary's) filled with each of the phrase's wordings."""
        templates = self.prompt_templates if templates is None else check_prompt_templates(templates)
        return [tuple(dict.fromkeys(fix_articles(t.format(phrase=w)) for t in templates for w in p.wordings))
                for p in self.phrases(extra)]

    def attribute_names(self) -> list[str]:
        """The binary attribute vector's entries: every attribute of a present phrase of the
        caption groups, in first-seen order."""
        names: dict[str, None] = {}
        for phrase in self.phrases():
            if not phrase.absent:
                names.update(dict.fromkeys(phrase.attributes))
        return list(names)

    def group(self, name: str) -> Group:
        for group in self.all_groups(extra=True):
            if group.name == name:
                return group
        raise KeyError(name)


def load_vocabulary(path: str | os.PathLike | None = None) -> Vocabulary:
    """Read a vocabulary YAML file (default: the shipped 14-group one)."""
    path = Path(path) if path is not None else default_vocabulary_path()
    values = read_yaml_mapping(path)
    prompt = values.get("prompt", DEFAULT_PROMPT)
    try:
        templates = check_prompt_templates([prompt] if isinstance(prompt, str) else prompt)
    except UsageError as exc:
        raise UsageError(f"{path}: 'prompt': {exc}") from None
    groups = tuple(_group(entry, path) for entry in _list(values.get("groups"), path, "groups"))
    extra = tuple(_group(entry, path) for entry in _list(values.get("extra_groups", []), path, "extra_groups"))
    if not groups:
        raise UsageError(f"{path}: no groups")
    names = [g.name for g in groups + extra]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"{path}: group {duplicate!r} is defined twice")
    return Vocabulary(templates, groups, extra, str(path))


def check_prompt_templates(templates: Any) -> tuple[str, ...]:
    """``templates`` as a tuple, once each is known to be a string with one {phrase} field."""
    if isinstance(templates, str) or not isinstance(templates, (list, tuple)) or not templates:
        raise UsageError("expected a prompt template or a non-empty list of them")
    for template in templates:
        rest = template.replace("{phrase}", "", 1) if isinstance(template, str) else "{"
        if rest == template or "{" in rest or "}" in rest:
            raise UsageError(f"a prompt template must contain {{phrase}} once and no other braces, got {template!r}")
    return tuple(templates)


def _list(value: Any, path: Path, where: str) -> list:
    if not isinstance(value, list):
        raise UsageError(f"{path}: {where!r} must be a list")
    return value


def _group(entry: Any, path: Path) -> Group:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise UsageError(f"{path}: every group needs a 'name'")
    name = entry["name"]
    where = f"{path}: group {name!r}"
    required = bool(entry.get("required", False))
    role = entry.get("role")
    if role is not None and role not in ROLES:
        raise UsageError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    phrases = list(_composed(name, entry["compose"], path, role)) if "compose" in entry else []
    phrases += [_phrase(name, item, path, role) for item in _list(entry.get("phrases", []), path, f"{name}.phrases")]
    if not phrases:
        raise UsageError(f"{where}: has no phrases")
    absent = [p for p in phrases if p.absent]
    if required and absent:
        raise UsageError(f"{where}: a required group has no 'absent' phrase (it always names one)")
    if not required and len(absent) != 1:
        raise UsageError(f"{where}: an optional group needs exactly one phrase with 'absent: true'")
    missing_role = next((p for p in phrases if not p.absent and p.role is None), None)
    if missing_role:
        raise UsageError(f"{where}: phrase {missing_role.prompt!r} needs a role ({', '.join(ROLES)})")
    keys = [p.key for p in phrases]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate:
        raise UsageError(f"{where}: phrase {duplicate!r} appears twice")
    return Group(name, required, tuple(phrases), role)


def _words(value: Any, path: Path, where: str) -> tuple[str, ...]:
    words = [value] if isinstance(value, str) else value
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise UsageError(f"{path}: {where}: expected a word or a non-empty list of words")
    return tuple(w.strip() for w in words)


def _phrase(group: str, item: Any, path: Path, group_role: str | None) -> Phrase:
    if not isinstance(item, dict) or "prompt" not in item:
        raise UsageError(f"{path}: group {group!r}: every phrase needs a 'prompt'")
    wordings = _words(item["prompt"], path, f"group {group!r} phrase prompt")
    prompt = wordings[0]
    unknown = sorted(set(item) - _PHRASE_KEYS)
    if unknown:
        raise UsageError(f"{path}: group {group!r}: unknown phrase key {unknown[0]!r}")
    where = f"group {group!r} phrase {prompt!r}"
    captions = _words(item.get("caption", prompt), path, where)
    key = str(item.get("key", strip_article(captions[0]) if not item.get("absent") else prompt))
    attributes = _words(item["attributes"], path, where) if "attributes" in item else (_slug(f"{group}_{key}"),)
    values = {str(k): str(v) for k, v in (item.get("values") or {}).items()}
    role = item.get("role", group_role)
    if role is not None and role not in ROLES:
        raise UsageError(f"{path}: {where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    return Phrase(group, key, prompt, captions, values, attributes, role, bool(item.get("absent", False)),
                  item.get("pronoun"), wordings)


def _composed(group: str, spec: Any, path: Path, role: str | None) -> Iterator[Phrase]:
    """One phrase per combination of the parts' values, in the order the parts list them."""
    where = f"group {group!r} compose"
    if not isinstance(spec, dict) or not isinstance(spec.get("prompt"), str) or not isinstance(spec.get("parts"), dict):
        raise UsageError(f"{path}: {where}: needs 'prompt' and 'parts'")
    parts = {}
    for part, options in spec["parts"].items():
        if not isinstance(options, dict) or not options:
            raise UsageError(f"{path}: {where}: part {part!r} must map values to words")
        parsed = {}
        for value, words in options.items():
            singular = isinstance(words, dict) and bool(words.get("singular"))
            parsed[str(value)] = (_words(words.get("words") if isinstance(words, dict) else words, path,
                                         f"{where} {part}={value}"), singular)
        parts[part] = parsed
    caption = spec.get("caption", spec["prompt"])
    attributes = spec.get("attributes")
    for combination in itertools.product(*(parts[p].items() for p in parts)):
        chosen = dict(zip(parts, combination))
        values = {part: value for part, (value, _) in chosen.items()}
        singular = any(is_singular for _, (_, is_singular) in chosen.values())
        article = "a " if singular else ""
        first_words = {part: words[0] for part, (_, (words, _)) in chosen.items()}
        prompt = spec["prompt"].format(a=article, **first_words)
        # Every synonym combination of the parts is a wording and a caption synonym of the phrase.
        synonyms = [dict(zip(parts, words)) for words in itertools.product(*(w for _, (w, _) in chosen.values()))]
        wordings = tuple(spec["prompt"].format(a=article, **words) for words in synonyms)
        captions = tuple(caption.format(a=article, **words) for words in synonyms)
        key = caption.format(a="", **first_words)
        names = tuple(_slug(a.format(**values)) for a in attributes) if attributes else (_slug(f"{group}_{key}"),)
        yield Phrase(group, key, prompt, captions, values, names, role, wordings=wordings)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def strip_article(text: str) -> str:
    """The phrase without its leading article ("a red coat" -> "red coat")."""
    for article in ("a ", "an "):
        if text.startswith(article):
            return text[len(article):]
    return text


_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def fix_articles(text: str) -> str:
    """"a" before a vowel sound becomes "an" (the vocabulary's words have no silent-h or
    "you"-sounding starts)."""
    return _ARTICLE.sub(lambda m: m.group(1) + "n ", text)
