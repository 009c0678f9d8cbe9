"""Person data: the canonical record, dataset readers and the synthetic person world."""

from personvl.data.records import PersonRecord, count_identities, relabel_identities

__all__ = ["PersonRecord", "count_identities", "relabel_identities"]
