"""Sampling identities: look-alike families of people who differ in one or two details."""

from __future__ import annotations

import numpy as np

from personvl.data.synth import vocabulary as vocab

# Common colours are common: many identities share "black trousers" or "blue shirt", so the
# fine details are what tell them apart (as in the real benchmarks).
_COLOUR_WEIGHTS = {
    "black": 0.20, "white": 0.13, "grey": 0.11, "blue": 0.14, "red": 0.08, "green": 0.06,
    "yellow": 0.05, "orange": 0.04, "pink": 0.05, "purple": 0.04, "brown": 0.10,
}
_UPPER_WEIGHTS = {"t-shirt": 0.28, "shirt": 0.2, "sweater": 0.14, "jacket": 0.16, "coat": 0.14,
                  "dress": 0.08}
_LOWER_WEIGHTS = {"trousers": 0.38, "jeans": 0.32, "shorts": 0.16, "skirt": 0.14}
_BAG_WEIGHTS = {"none": 0.4, "backpack": 0.25, "handbag": 0.17, "shoulder bag": 0.18}

# The details that distinguish members of one family.
FAMILY_DETAILS = ("shoes_colour", "upper_pattern", "bag", "hair_length", "hat", "glasses",
                  "lower_colour", "sleeve", "hair_colour", "upper_colour", "build")


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _pick_uniform(rng: np.random.Generator, values) -> str:
    return values[int(rng.integers(len(values)))]


def sample_slot(rng: np.random.Generator, slot: str, appearance: dict[str, str]) -> str:
    """A fresh value for one slot (before the consistency rules of ``make_consistent``)."""
    if slot in ("upper_colour", "lower_colour", "bag_colour", "hat_colour", "umbrella_colour"):
        return _pick(rng, _COLOUR_WEIGHTS)
    if slot == "upper_type":
        return _pick(rng, _UPPER_WEIGHTS)
    if slot == "lower_type":
        return _pick(rng, _LOWER_WEIGHTS)
    if slot == "bag":
        return _pick(rng, _BAG_WEIGHTS)
    if slot == "upper_pattern":
        return _pick(rng, {"plain": 0.64, "striped": 0.2, "checked": 0.16})
    if slot == "hat":
        return "yes" if rng.random() < 0.15 else "no"
    if slot == "glasses":
        return "yes" if rng.random() < 0.18 else "no"
    if slot == "umbrella":
        return "yes" if rng.random() < 0.07 else "no"
    if slot == "phone":
        return "yes" if rng.random() < 0.12 else "no"
    if slot == "hair_length":
        long_p = 0.75 if appearance.get("gender") == "woman" else 0.12
        return "long" if rng.random() < long_p else "short"
    return _pick_uniform(rng, vocab.APPEARANCE_SLOTS[slot])


def make_consistent(rng: np.random.Generator, appearance: dict[str, str]) -> dict[str, str]:
    """Enforce what a person can wear together (no dress with trousers, t-shirts have short
    sleeves, ...), resampling colours that an earlier rule set to ``none``."""
    a = dict(appearance)
    if a["upper_type"] == "dress" and a["gender"] == "man":
        a["upper_type"] = "shirt"
    if a["lower_type"] == "skirt" and a["gender"] == "man":
        a["lower_type"] = "trousers"
    if a["upper_type"] == "dress":
        a["lower_type"] = "none"
        a["lower_colour"] = "none"
    elif a["lower_type"] == "none":
        a["lower_type"] = sample_slot(rng, "lower_type", a)
        if a["lower_type"] == "skirt" and a["gender"] == "man":
            a["lower_type"] = "trousers"
    if a["upper_type"] == "t-shirt":
        a["sleeve"] = "short"
    elif a["upper_type"] in ("coat", "jacket", "sweater"):
        a["sleeve"] = "long"
    if a["upper_type"] in ("coat", "jacket") and a["upper_pattern"] == "striped":
        a["upper_pattern"] = "plain"
    if a["lower_type"] == "jeans" and a["lower_colour"] not in vocab.JEANS_COLOURS:
        a["lower_colour"] = _pick_uniform(rng, vocab.JEANS_COLOURS)
    if a["lower_type"] not in ("none",) and a["lower_colour"] == "none":
        a["lower_colour"] = sample_slot(rng, "lower_colour", a)
    for item, colour_slot, absent in (("bag", "bag_colour", "none"), ("hat", "hat_colour", "no"),
                                      ("umbrella", "umbrella_colour", "no")):
        if a[item] == absent:
            a[colour_slot] = "none"
        elif a[colour_slot] == "none":
            a[colour_slot] = sample_slot(rng, colour_slot, a)
    if a["umbrella"] == "yes" and a["phone"] == "yes":
        a["phone"] = "no"  # two hands: a bag or umbrella and a phone is one object too many
    return a


def sample_prototype(rng: np.random.Generator) -> dict[str, str]:
    appearance: dict[str, str] = {"gender": _pick_uniform(rng, vocab.GENDERS)}
    for slot in vocab.APPEARANCE_SLOTS:
        if slot != "gender":
            appearance[slot] = sample_slot(rng, slot, appearance)
    return make_consistent(rng, appearance)


def appearance_key(appearance: dict[str, str]) -> tuple[str, ...]:
    return tuple(appearance[slot] for slot in vocab.APPEARANCE_SLOTS)


def sample_identities(
    rng: np.random.Generator, count: int, family_size: int, max_differences: int
) -> list[dict[str, str]]:
    """``count`` distinct appearances in families of ``family_size`` look-alikes.

    Each family member copies the family prototype and changes 1..``max_differences`` details
    of ``FAMILY_DETAILS``; appearances are unique across the whole world, so two identities
    always differ in something drawn.
    """
    identities: list[dict[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    while len(identities) < count:
        prototype = sample_prototype(rng)
        members = 0
        attempts = 0
        while members < family_size and len(identities) < count and attempts < 50 * family_size:
            attempts += 1
            member = dict(prototype)
            if members > 0:
                changes = int(rng.integers(1, max_differences + 1))
                for slot in rng.choice(FAMILY_DETAILS, size=changes, replace=False):
                    member[str(slot)] = sample_slot(rng, str(slot), member)
                member = make_consistent(rng, member)
            key = appearance_key(member)
            if key in seen:
                continue
            seen.add(key)
            identities.append(member)
            members += 1
    # Families stay contiguous so that a split by index range keeps most look-alikes together:
    # the test split then holds the confusable neighbours that make retrieval hard.
    return identities
