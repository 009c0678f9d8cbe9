"""PersonRecord, the one sample type every reader produces and every task consumes."""

from __future__ import annotations

import dataclasses
from array import array
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence, overload

BoxXYXY = tuple[float, float, float, float]

# PRW's code for a person drawn in a scene frame but not identified; CUHK-SYSU's unlabelled
# boxes get the same code so that person-search tasks see one convention.
UNLABELLED_PID = -2


@dataclass
class PersonRecord:
    """One person image and everything known about it.

    ``pid`` and ``camid`` are None where a dataset has no identities or cameras (parsing sets,
    unlabeled crops). ``attributes`` is a 0/1 vector aligned with the dataset's
    ``attribute_names``; ``attribute_phrases`` are the words a caption uses for them (for masked
    attribute prediction). ``mask_path`` is an index PNG of body parts, ``scene_box`` the
    person's box (x1, y1, x2, y2, pixels) in a wider scene frame when the image is a scene.
    ``boxes`` and ``box_pids`` list every person drawn in a scene frame (person-search
    galleries); a box pid of ``UNLABELLED_PID`` marks a person without an identity.
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
    boxes: list[BoxXYXY] | None = None
    box_pids: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; keys with empty defaults are kept so the schema is explicit."""
        values = dataclasses.asdict(self)
        if values["scene_box"] is not None:
            values["scene_box"] = list(values["scene_box"])
        if values["boxes"] is not None:
            values["boxes"] = [list(box) for box in values["boxes"]]
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
        if values.get("boxes") is not None:
            values["boxes"] = [tuple(float(v) for v in box) for box in values["boxes"]]
        return cls(**values)


def relabel_identities(records: Sequence[PersonRecord], *, sort: bool = False) -> tuple[list[PersonRecord], dict[int, int]]:
    """Map the identities of ``records`` to 0..N-1 (in order of first appearance, or of the
    original numbers with ``sort=True``, which gives CUHK-PEDES train labels ``id - 1`` as the
    field's loaders use them).

    Returns new records and the mapping original pid -> label, so classification heads can be
    trained and the original numbers recovered.
    """
    unlabelled = next((r for r in records if r.pid is None), None)
    if unlabelled is not None:
        raise ValueError(f"{unlabelled.image_path}: cannot relabel a record without an identity")
    pids = sorted({r.pid for r in records}) if sort else dict.fromkeys(r.pid for r in records)
    mapping: dict[int, int] = {pid: label for label, pid in enumerate(pids)}
    relabelled = [dataclasses.replace(record, pid=mapping[record.pid]) for record in records]
    return relabelled, mapping


def count_identities(records: Iterable[PersonRecord]) -> int:
    return len({r.pid for r in records if r.pid is not None})


class RecordTable(Sequence[PersonRecord]):
    """Caption records stored column by column and built as PersonRecords on access.

    A million-record annotation index (SYNTH-PEDES, LUPerson-T) held as PersonRecord objects
    spends more memory on the objects than on the text they carry; here a record costs its
    strings and a few references. Paths are kept relative to ``prefix``; attribute phrase
    tuples repeat across records and are shared. Records built from the table are new
    objects: change a table by building another.
    """

    def __init__(self, prefix: str, split: str, extra_key: str | None = None) -> None:
        self.prefix = prefix
        self.split = split
        self.extra_key = extra_key      # the one extra field the table carries, if any
        self.paths: list[str] = []
        self.pids = array("q")
        self.captions: list[tuple[str, ...]] = []
        self.phrases: list[tuple[str, ...]] = []
        self.extras: list[Any] = []
        self._shared_phrases: dict[tuple[str, ...], tuple[str, ...]] = {}

    def append(self, relative_path: str, pid: int, captions: Sequence[str], phrases: Sequence[str] = (),
               extra: Any = None) -> None:
        phrases = tuple(phrases)
        self.paths.append(relative_path)
        self.pids.append(pid)
        self.captions.append(tuple(captions))
        self.phrases.append(self._shared_phrases.setdefault(phrases, phrases))
        self.extras.append(extra)

    def with_pids(self, mapping: dict[int, int]) -> "RecordTable":
        """The same records with each pid replaced by ``mapping[pid]``."""
        table = RecordTable(self.prefix, self.split, self.extra_key)
        table.paths, table.captions, table.phrases, table.extras = self.paths, self.captions, self.phrases, self.extras
        table.pids = array("q", (mapping[p] for p in self.pids))
        return table

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> PersonRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[PersonRecord]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("record index out of range")
        return self._record(index)

    def _record(self, i: int) -> PersonRecord:
        extra = {self.extra_key: list(self.extras[i])} if self.extra_key and self.extras[i] is not None else {}
        return PersonRecord(self.prefix + self.paths[i], pid=self.pids[i], captions=list(self.captions[i]),
                            attribute_phrases=list(self.phrases[i]), split=self.split, extra=extra)

    def __iter__(self) -> Iterator[PersonRecord]:
        return (self._record(i) for i in range(len(self)))


class DatasetSplit(Sequence[PersonRecord]):
    """One split of a dataset as read from disk: a sequence of records and what the set knows
    about them.

    ``attribute_names`` aligns with every record's ``attributes`` (None for sets without
    attributes), ``part_names`` with the values of the part masks (parsing sets).
    ``identity_mapping`` is original pid -> label when the split was relabelled to 0..N-1.
    ``missing_images`` counts records left out because their image was not on disk
    (``skip_missing``).
    """

    def __init__(self, records: Sequence[PersonRecord], *, dataset: str, split: str, root: str,
                 attribute_names: Sequence[str] | None = None, part_names: Sequence[str] | None = None,
                 identity_mapping: dict[int, int] | None = None, missing_images: int = 0) -> None:
        self.records = records if isinstance(records, RecordTable) else list(records)
        self.dataset = dataset
        self.split = split
        self.root = root
        self.attribute_names = list(attribute_names) if attribute_names is not None else None
        self.part_names = list(part_names) if part_names is not None else None
        self.identity_mapping = identity_mapping
        self.missing_images = missing_images

    @overload
    def __getitem__(self, index: int) -> PersonRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[PersonRecord]: ...

    def __getitem__(self, index):
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PersonRecord]:
        return iter(self.records)

    def with_records(self, records: Sequence[PersonRecord]) -> "DatasetSplit":
        """A split of the same set holding ``records`` (a part of this one, e.g. held out)."""
        return DatasetSplit(list(records), dataset=self.dataset, split=self.split, root=self.root,
                            attribute_names=self.attribute_names, part_names=self.part_names,
                            identity_mapping=self.identity_mapping)

    def __repr__(self) -> str:
        return f"DatasetSplit({self.dataset!r}, split={self.split!r}, {len(self.records)} records, root={self.root!r})"
