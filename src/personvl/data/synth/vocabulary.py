"""What a synthetic person can look like, and the names the datasets use for it.

Everything the generator samples, draws, captions or labels is declared here, so that the
renderer, the caption grammar, the attribute vector and world.json can never disagree.
"""

from __future__ import annotations

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (232, 232, 228),
    "grey": (128, 128, 132),
    "red": (196, 32, 38),
    "blue": (38, 72, 188),
    "green": (42, 138, 62),
    "yellow": (228, 202, 44),
    "orange": (232, 124, 32),
    "pink": (234, 138, 176),
    "purple": (118, 52, 148),
    "brown": (118, 74, 40),
}
# Colours an annotator plausibly confuses (used for the documented caption mistakes).
CONFUSABLE_COLOURS: dict[str, tuple[str, ...]] = {
    "black": ("grey", "blue", "brown"),
    "white": ("grey", "yellow", "pink"),
    "grey": ("black", "white", "blue"),
    "red": ("orange", "pink", "purple"),
    "blue": ("purple", "black", "green"),
    "green": ("blue", "grey", "yellow"),
    "yellow": ("orange", "white", "green"),
    "orange": ("red", "yellow", "brown"),
    "pink": ("red", "purple", "white"),
    "purple": ("blue", "pink", "red"),
    "brown": ("orange", "black", "grey"),
}
CONFUSABLE_HAIR_COLOURS: dict[str, tuple[str, ...]] = {
    "black": ("brown",), "brown": ("black", "blonde"), "blonde": ("brown", "grey"), "grey": ("blonde", "black"),
}
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "light": (238, 204, 178),
    "medium": (205, 160, 120),
    "tan": (164, 112, 76),
    "dark": (98, 66, 46),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (22, 20, 20),
    "brown": (96, 62, 34),
    "blonde": (214, 182, 102),
    "grey": (168, 168, 168),
}
GENDERS = ("man", "woman")
BUILDS = ("slim", "average", "heavy")
HAIR_LENGTHS = ("short", "long")
UPPER_TYPES = ("t-shirt", "shirt", "sweater", "jacket", "coat", "dress")
UPPER_PATTERNS = ("plain", "striped", "checked")
SLEEVES = ("short", "long")
LOWER_TYPES = ("trousers", "jeans", "shorts", "skirt")
JEANS_COLOURS = ("blue", "black", "grey")
SHOE_COLOURS = ("black", "white", "brown", "grey", "red", "blue")
BAGS = ("none", "backpack", "handbag", "shoulder bag")
VIEWS = ("front", "back", "side")

# The identity's appearance: slot -> allowed values. ``None`` means "absent" for optional items.
APPEARANCE_SLOTS: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "build": BUILDS,
    "skin": tuple(SKIN_TONES),
    "hair_length": HAIR_LENGTHS,
    "hair_colour": tuple(HAIR_COLOURS),
    "upper_type": UPPER_TYPES,
    "upper_colour": tuple(COLOURS),
    "upper_pattern": UPPER_PATTERNS,
    "sleeve": SLEEVES,
    "lower_type": LOWER_TYPES + ("none",),
    "lower_colour": tuple(COLOURS) + ("none",),
    "shoes_colour": SHOE_COLOURS,
    "bag": BAGS,
    "bag_colour": tuple(COLOURS) + ("none",),
    "hat": ("no", "yes"),
    "hat_colour": tuple(COLOURS) + ("none",),
    "glasses": ("no", "yes"),
    "umbrella": ("no", "yes"),
    "umbrella_colour": tuple(COLOURS) + ("none",),
    "phone": ("no", "yes"),
}

# Slots a caption can mention (build and skin tone are drawn but, as in CUHK-PEDES, rarely
# described; they only make identities differ).
CAPTION_SLOTS = (
    "gender", "hair_length", "hair_colour", "hat", "hat_colour", "glasses", "upper_type",
    "upper_colour", "upper_pattern", "sleeve", "lower_type", "lower_colour", "shoes_colour",
    "bag", "bag_colour", "umbrella", "umbrella_colour", "phone",
)


def attribute_names() -> list[str]:
    """The binary attribute vector of every synthetic image, in order (documented in README)."""
    names = ["female", "hair_long", "hat", "glasses"]
    names += [f"upper_{t}" for t in UPPER_TYPES]
    names += ["upper_striped", "upper_checked", "sleeve_long"]
    names += [f"lower_{t}" for t in LOWER_TYPES]
    names += ["backpack", "handbag", "shoulder_bag", "umbrella", "phone"]
    names += [f"upper_colour_{c}" for c in COLOURS]
    names += [f"lower_colour_{c}" for c in COLOURS]
    names += [f"shoes_colour_{c}" for c in SHOE_COLOURS]
    names += ["view_front", "view_back", "view_side"]
    return names


def attribute_vector(appearance: dict[str, str], view: str) -> list[int]:
    """0/1 vector over ``attribute_names()`` for an identity seen from ``view``."""
    on = {
        "female": appearance["gender"] == "woman",
        "hair_long": appearance["hair_length"] == "long",
        "hat": appearance["hat"] == "yes",
        "glasses": appearance["glasses"] == "yes",
        "upper_striped": appearance["upper_pattern"] == "striped",
        "upper_checked": appearance["upper_pattern"] == "checked",
        "sleeve_long": appearance["sleeve"] == "long",
        "backpack": appearance["bag"] == "backpack",
        "handbag": appearance["bag"] == "handbag",
        "shoulder_bag": appearance["bag"] == "shoulder bag",
        "umbrella": appearance["umbrella"] == "yes",
        "phone": appearance["phone"] == "yes",
        f"upper_{appearance['upper_type']}": True,
        f"lower_{appearance['lower_type']}": appearance["lower_type"] != "none",
        f"upper_colour_{appearance['upper_colour']}": True,
        f"lower_colour_{appearance['lower_colour']}": appearance["lower_colour"] != "none",
        f"shoes_colour_{appearance['shoes_colour']}": True,
        f"view_{view}": True,
    }
    return [int(bool(on.get(name, False))) for name in attribute_names()]


# Part labels of the index-PNG masks: LIP's 20 classes, then the carried objects LIP leaves in
# the background. Exporting to LIP maps labels above 19 back to 0.
PART_LABELS = (
    "background", "hat", "hair", "glove", "sunglasses", "upper_clothes", "dress", "coat",
    "socks", "pants", "jumpsuits", "scarf", "skirt", "face", "left_arm", "right_arm",
    "left_leg", "right_leg", "left_shoe", "right_shoe", "bag", "umbrella", "phone",
)
LABEL = {name: index for index, name in enumerate(PART_LABELS)}
LIP_NUM_CLASSES = 20
