import pytest

from personvl.data import PersonRecord, count_identities, relabel_identities


def test_record_round_trips_through_a_dict():
    record = PersonRecord("a.jpg", pid=7, camid=2, captions=["a man"], attributes=[0, 1],
                          scene_box=(1.0, 2.0, 30.0, 60.0), split="train")
    values = record.to_dict()
    assert values["scene_box"] == [1.0, 2.0, 30.0, 60.0]
    assert PersonRecord.from_dict(values) == record


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match="unknown PersonRecord field 'person'"):
        PersonRecord.from_dict({"image_path": "a.jpg", "person": 1})


def test_relabel_keeps_identities_one_to_one():
    records = [PersonRecord(f"{i}.jpg", pid=p) for i, p in enumerate([12, 5, 12, 40])]
    relabelled, mapping = relabel_identities(records)
    assert [r.pid for r in relabelled] == [0, 1, 0, 2]
    assert mapping == {12: 0, 5: 1, 40: 2}
    assert count_identities(relabelled) == 3
    with pytest.raises(ValueError, match="without an identity"):
        relabel_identities([PersonRecord("x.jpg")])
