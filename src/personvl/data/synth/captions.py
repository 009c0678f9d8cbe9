"""Captions as CUHK-PEDES annotators write them, from a grammar with synonyms.

A caption mentions only part of what is visible, in a varied order and sentence structure, and
now and then states a wrong colour (``error_rate`` per stated colour, a confusable one as a
human would pick). Every caption comes with its *mentions*: the (slot, value) pairs it states,
and whether each is true. They are what the calibration oracle and the tests read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personvl.data.synth import vocabulary as vocab


@dataclass(frozen=True)
class Mention:
    slot: str
    value: str
    correct: bool


@dataclass(frozen=True)
class Caption:
    text: str
    mentions: tuple[Mention, ...]


_SUBJECTS = {
    "man": ("A man", "The man", "This man", "A young man", "The male pedestrian", "A guy",
            "The gentleman", "A male"),
    "woman": ("A woman", "The woman", "This lady", "A young woman", "The female pedestrian",
              "A girl", "The lady", "A female"),
    None: ("A person", "The pedestrian", "This person", "Someone", "The individual"),
}
_PRONOUNS = {"man": "He", "woman": "She", None: "The person"}
_NOUNS = {
    "t-shirt": ("t-shirt", "tee", "t shirt"),
    "shirt": ("shirt", "button-up shirt", "top"),
    "sweater": ("sweater", "jumper", "pullover"),
    "jacket": ("jacket", "zip-up jacket", "windbreaker"),
    "coat": ("coat", "long coat", "overcoat"),
    "dress": ("dress", "one-piece dress", "long dress"),
    "trousers": ("trousers", "pants", "slacks"),
    "jeans": ("jeans", "denim jeans", "denim pants"),
    "shorts": ("shorts", "short pants"),
    "skirt": ("skirt", "knee-length skirt"),
    "shoes": ("shoes", "sneakers", "trainers", "footwear"),
    "backpack": ("backpack", "rucksack", "school bag"),
    "handbag": ("handbag", "purse", "hand bag"),
    "shoulder bag": ("shoulder bag", "messenger bag", "cross-body bag"),
    "hat": ("hat", "cap", "beanie"),
    "glasses": ("glasses", "sunglasses", "spectacles"),
    "umbrella": ("umbrella", "parasol"),
    "phone": ("phone", "cellphone", "mobile phone"),
}
_COLOUR_WORDS = {"grey": ("grey", "gray")}
_PATTERN_WORDS = {"striped": ("striped", "stripy", "stripe-patterned"),
                  "checked": ("checked", "plaid", "checkered")}
_SLEEVE_WORDS = {"short": ("short-sleeved", "short sleeve"), "long": ("long-sleeved", "long sleeve")}
_WEAR_VERBS = ("is wearing", "wears", "is dressed in", "has on", "is in")
_CARRY_VERBS = ("is carrying", "carries", "has", "is holding")
_VIEW_PHRASES = {
    "front": ("walking towards the camera", "facing the camera", "facing forward"),
    "back": ("walking away from the camera", "seen from behind", "facing away"),
    "side": ("walking sideways", "seen from the side", "walking to the side"),
}
_GROUP_ORDER = ("hair", "hat", "glasses", "upper", "lower", "shoes", "bag", "umbrella", "phone")


def visible_slots(appearance: dict[str, str], view: str, feet_hidden: bool, legs_hidden: bool) -> dict[str, str]:
    """The (slot -> value) facts a viewer of this shot can state; absent items are omitted."""
    a = appearance
    seen = {"gender": a["gender"], "hair_length": a["hair_length"], "hair_colour": a["hair_colour"],
            "upper_type": a["upper_type"], "upper_colour": a["upper_colour"], "sleeve": a["sleeve"]}
    if a["upper_pattern"] != "plain":
        seen["upper_pattern"] = a["upper_pattern"]
    if a["hat"] == "yes":
        seen.update(hat="yes", hat_colour=a["hat_colour"])
    if a["glasses"] == "yes" and view != "back":
        seen["glasses"] = "yes"
    if a["lower_type"] != "none" and not legs_hidden:
        seen.update(lower_type=a["lower_type"], lower_colour=a["lower_colour"])
    if not feet_hidden:
        seen["shoes_colour"] = a["shoes_colour"]
    # A backpack seen from the front is two straps: annotators do not name it.
    if a["bag"] != "none" and not (a["bag"] == "backpack" and view == "front"):
        seen.update(bag=a["bag"], bag_colour=a["bag_colour"])
    if a["umbrella"] == "yes":
        seen.update(umbrella="yes", umbrella_colour=a["umbrella_colour"])
    if a["phone"] == "yes" and view != "back":
        seen["phone"] = "yes"
    return seen


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


class _Writer:
    """Builds one caption, recording each fact it states."""

    def __init__(self, rng: np.random.Generator, seen: dict[str, str], error_rate: float):
        self.rng = rng
        self.seen = seen
        self.error_rate = error_rate
        self.mentions: list[Mention] = []

    def state(self, slot: str, value: str | None = None) -> str:
        value = self.seen[slot] if value is None else value
        self.mentions.append(Mention(slot, value, value == self.seen[slot]))
        return value

    def colour(self, slot: str) -> str:
        true = self.seen[slot]
        stated = true
        if self.rng.random() < self.error_rate:
            # A mistaken colour is still a colour this item can have (a real value of the slot).
            table = vocab.CONFUSABLE_HAIR_COLOURS if slot == "hair_colour" else vocab.CONFUSABLE_COLOURS
            allowed = vocab.APPEARANCE_SLOTS[slot]
            options = tuple(c for c in table[true] if c in allowed) or tuple(c for c in allowed if c not in (true, "none"))
            stated = _choice(self.rng, options)
        self.state(slot, stated)
        return _choice(self.rng, _COLOUR_WORDS.get(stated, (stated,)))

    def maybe_colour(self, slot: str, p: float = 0.88) -> str:
        return self.colour(slot) + " " if self.rng.random() < p else ""

    def article(self, phrase: str) -> str:
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase

    # -- phrases per group
    def hair(self) -> str:
        parts = []
        r = self.rng.random()
        if r < 0.75:
            parts.append(self.state("hair_length"))
        if r > 0.35:
            parts.append(self.colour("hair_colour"))
        return " ".join(parts + ["hair"])

    def upper(self) -> str:
        words = [self.maybe_colour("upper_colour").strip()]
        if "upper_pattern" in self.seen and self.rng.random() < 0.8:
            words.append(_choice(self.rng, _PATTERN_WORDS[self.state("upper_pattern")]))
        if self.seen["upper_type"] in ("shirt", "dress") and self.rng.random() < 0.5:
            words.append(_choice(self.rng, _SLEEVE_WORDS[self.state("sleeve")]))
        words.append(_choice(self.rng, _NOUNS[self.state("upper_type")]))
        return self.article(" ".join(w for w in words if w))

    def lower(self) -> str:
        colour = self.maybe_colour("lower_colour")
        kind = self.state("lower_type")
        noun = _choice(self.rng, _NOUNS[kind])
        phrase = colour + noun
        return self.article(phrase) if kind == "skirt" else phrase

    def shoes(self) -> str:
        return self.colour("shoes_colour") + " " + _choice(self.rng, _NOUNS["shoes"])

    def item(self, slot: str) -> str:
        self.state(slot)
        colour_slot = f"{slot}_colour"
        noun_key = self.seen[slot] if slot == "bag" else slot
        colour = self.maybe_colour(colour_slot, 0.8) if colour_slot in self.seen else ""
        noun = _choice(self.rng, _NOUNS[noun_key])
        return noun if slot == "glasses" else self.article(colour + noun)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def write_caption(
    rng: np.random.Generator, seen: dict[str, str], view: str, mention_rate: float, error_rate: float
) -> Caption:
    """One caption of a shot whose visible facts are ``seen``."""
    w = _Writer(rng, seen, error_rate)
    groups = [g for g in _GROUP_ORDER if _group_visible(g, seen)]
    chosen = [g for g in groups if rng.random() < (min(1.0, mention_rate + 0.3) if g == "upper" else mention_rate)]
    if len(chosen) < 2:
        extra = [g for g in groups if g not in chosen]
        rng.shuffle(extra)
        chosen += extra[: 2 - len(chosen)]
    if rng.random() < 0.35:
        rng.shuffle(chosen)
    else:
        chosen.sort(key=_GROUP_ORDER.index)

    gender = w.state("gender") if rng.random() < 0.85 else None
    subject = _choice(rng, _SUBJECTS[gender])
    pronoun = _PRONOUNS[gender]
    phrases = {}
    for group in chosen:
        phrases[group] = getattr(w, group)() if group in ("hair", "upper", "lower", "shoes") else w.item(group)
    worn = [phrases[g] for g in chosen if g in ("hat", "glasses", "upper", "lower", "shoes")]
    carried = [phrases[g] for g in chosen if g in ("bag", "umbrella")]
    hair = phrases.get("hair")
    phone = "phone" in phrases

    sentences: list[str] = []
    structure = int(rng.integers(4))
    activity = f"is {_choice(rng, _VIEW_PHRASES[view])}"
    if hair and structure == 1:
        sentences.append(f"{subject} has {hair}.")
        subject, hair = pronoun, None
    wear = f"{_choice(rng, _WEAR_VERBS)} {_join(worn)}" if worn else activity
    if structure == 2 and worn:
        # "A man with short hair in a red coat and jeans is carrying a bag."
        lead = f"{subject} with {hair}" if hair else subject
        tail = f"{_choice(rng, _CARRY_VERBS)} {_join(carried)}" if carried else activity
        sentences.append(f"{lead} in {_join(worn)} {tail}.")
        carried = []
    elif hair and structure == 3:
        sentences.append(f"{subject} has {hair} and {wear}.")
    elif hair:
        sentences.append(f"{subject} with {hair} {wear}.")
    else:
        sentences.append(f"{subject} {wear}.")
    if carried:
        verb = _choice(rng, _CARRY_VERBS)
        also = " also" if rng.random() < 0.3 else ""
        sentences.append(f"{pronoun}{also} {verb} {_join(carried)}.")
    if phone:
        sentences.append(f"{pronoun} is looking at {phrases['phone']}.")
    if rng.random() < 0.25 and activity not in sentences[0]:
        sentences.append(f"{pronoun} {activity}.")
    text = " ".join(s[0].upper() + s[1:] for s in sentences)
    return Caption(text, tuple(w.mentions))


def _group_visible(group: str, seen: dict[str, str]) -> bool:
    return {
        "hair": "hair_length" in seen, "hat": "hat" in seen, "glasses": "glasses" in seen,
        "upper": "upper_type" in seen, "lower": "lower_type" in seen, "shoes": "shoes_colour" in seen,
        "bag": "bag" in seen, "umbrella": "umbrella" in seen, "phone": "phone" in seen,
    }[group]


def write_captions(rng: np.random.Generator, seen: dict[str, str], view: str, count: int,
                   mention_rate: float, error_rate: float) -> list[Caption]:
    """``count`` captions of one shot, pairwise different in wording."""
    captions: list[Caption] = []
    texts: set[str] = set()
    for _ in range(count * 10):
        caption = write_caption(rng, seen, view, mention_rate, error_rate)
        if caption.text not in texts:
            texts.add(caption.text)
            captions.append(caption)
        if len(captions) == count:
            break
    return captions


def attribute_string(appearance: dict[str, str], seen: dict[str, str]) -> str:
    """SYNTH-PEDES's 6 comma slots: gender, head, upper, lower, shoes, belongings."""
    head = "hat" if "hat" in seen else f"{seen['hair_colour']} hair"
    upper = f"{seen['upper_colour']} {seen['upper_type']}"
    lower = f"{seen['lower_colour']} {seen['lower_type']}" if "lower_type" in seen else "unknown"
    shoes = f"{seen['shoes_colour']} shoes" if "shoes_colour" in seen else "unknown"
    belongings = seen["bag"] if "bag" in seen else ("umbrella" if "umbrella" in seen else "unknown")
    return ",".join([seen["gender"], head, upper, lower, shoes, belongings])


_PROMPT_TEMPLATES = (
    "A {gender} with {head}, wearing {upper} and {lower}, with {shoes}{belongings}.",
    "The {gender} has {head} and wears {upper}, {lower} and {shoes}{belongings}.",
    "A photo of a {gender} in {upper} and {lower}, {shoes} and {head}{belongings}.",
    "This {gender} is dressed in {upper} with {lower} and {shoes}; {head}{belongings}.",
)


def prompt_caption(rng: np.random.Generator, attribute_text: str) -> str:
    """A SYNTH-PEDES-style prompt caption filled from the 6-slot attribute string."""
    gender, head, upper, lower, shoes, belongings = attribute_text.split(",")
    template = _choice(rng, _PROMPT_TEMPLATES)
    return template.format(
        gender=gender, head=head if head != "unknown" else "unseen head",
        upper=upper, lower=lower if lower != "unknown" else "unseen lower clothes",
        shoes=shoes if shoes != "unknown" else "hidden shoes",
        belongings="" if belongings == "unknown" else f", carrying a {belongings}",
    )
