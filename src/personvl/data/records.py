"""PersonRecord, the one sample type every reader produces and every task consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

BoxXYXY = tuple[float, float, float, float]


@dataclass
class PersonRecord:
    """One person image and everything known about it.

    ``pid`` and ``camid`` are None where a dataset has no identities or cameras (parsing sets,
    unlabeled crops). ``attributes`` is a 0/1 vector aligned with the dataset's
    ``attribute_names``; ``attribute_phrases`` are the words a caption uses for them (for masked
    attribute prediction). ``mask_path`` is an index PNG of body parts, ``scene_box`` the
    person's box (x1, y1, x2, y2, pixels) in a wider scene frame when the image is a scene.
    """

    image_path: str
    pid: int | None = None
    camid: int | None = None
    captions: list[str] = field(default_factory=list)
    attributes: list[int] | None = None
    attribute_phrases: list[str] = field(default_factory=list)
    mask_path: str | None = None
    scene_box: BoxXYXY | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; keys with empty defaults are kept so the schema is explicit."""
        values = dataclasses.asdict(self)
        if values["scene_box"] is not None:
            values["scene_box"] = list(values["scene_box"])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PersonRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PersonRecord field {unknown[0]!r}")
        values = dict(values)
        if values.get("scene_box") is not None:
            values["scene_box"] = tuple(float(v) for v in values["scene_box"])
        return cls(**values)


def relabel_identities(records: Sequence[PersonRecord]) -> tuple[list[PersonRecord], dict[int, int]]:
    """Map the identities of ``records`` to 0..N-1 (in order of first appearance).

    Returns new records and the mapping original pid -> label, so classification heads can be
    trained and the original numbers recovered.
    """
    mapping: dict[int, int] = {}
    relabelled = []
    for record in records:
        if record.pid is None:
            raise ValueError(f"{record.image_path}: cannot relabel a record without an identity")
        label = mapping.setdefault(record.pid, len(mapping))
        relabelled.append(dataclasses.replace(record, pid=label))
    return relabelled, mapping


def count_identities(records: Iterable[PersonRecord]) -> int:
    return len({r.pid for r in records if r.pid is not None})
