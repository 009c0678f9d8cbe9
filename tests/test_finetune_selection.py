"""Model selection never reads test data: only the final evaluation does, once."""

import pytest

import personvl.data.loading as loading
from personvl.errors import UsageError
from personvl.tasks import attributes, reid, text_to_image
from personvl.tasks.registry import finetune_task

COMMON = ["trainer.accelerator=cpu", "trainer.progress_bar=false", "data.workers=0", "trainer.max_steps=6",
          "selection.every_n_steps=2", "evaluation.plots=false", "data.identities_per_batch=4",
          "data.images_per_identity=2", "data.batch_size=8", "trainer.checkpoint_every_n_steps=3"]
TEST_SPLITS = {"t2i": {"test"}, "attributes": {"test"}, "reid": {"query", "gallery"}}


# One intra-op thread: two threads on two shared cores spend more time waiting than computing.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("task, module, folder, expected_val", [
    ("t2i", text_to_image, "cuhk-pedes", "val"),
    ("attributes", attributes, "pa100k", "val"),
    ("reid", reid, "market1501", None),
])
def test_selection_reads_no_test_split(small_world, tmp_path, monkeypatch, task, module, folder, expected_val):
    world, _ = small_world
    reads = []          # (phase, split) of every split a dataset reader parses
    phase = ["training"]
    original_get_format = loading.get_format

    class RecordingFormat:
        def __init__(self, wrapped):
            self._wrapped = wrapped

        def __getattr__(self, name):
            return getattr(self._wrapped, name)

        def read(self, root, split, **options):
            reads.append((phase[0], split))
            return self._wrapped.read(root, split, **options)

    monkeypatch.setattr(loading, "get_format", lambda name: RecordingFormat(original_get_format(name)))
    import personvl.models

    save_model = personvl.models.save_model

    def save_after_training(*args, **kwargs):     # the weights are fixed: what follows is the final evaluation
        phase[0] = "final"
        return save_model(*args, **kwargs)

    monkeypatch.setattr(personvl.models, "save_model", save_after_training)
    summary = module.finetune(None, [f"output_dir={tmp_path / task}", f"data.root={world / folder}", *COMMON])

    training = {split for when, split in reads if when == "training"}
    final = [split for when, split in reads if when == "final"]
    assert not training & TEST_SPLITS[task], reads
    assert "train" in training
    assert summary["selection"]["split"] == expected_val
    if expected_val:
        assert expected_val in training and len(summary["selection"]["history"]) == 3   # steps 2, 4, 6
    assert set(final) == TEST_SPLITS[task] and len(final) == len(TEST_SPLITS[task])     # read once, at the end


def test_a_run_scored_only_at_its_end_logs_the_score(small_world, tmp_path):
    """Without periodic selection the single score is taken as training ends, where Lightning
    forbids self.log(); the score must still reach the logs and the selection history."""
    import csv

    world, _ = small_world
    overrides = [o for o in COMMON if not o.startswith(("selection.", "trainer.max_steps"))]
    summary = attributes.finetune(None, [f"output_dir={tmp_path / 'run'}", f"data.root={world / 'pa100k'}",
                                         "trainer.max_steps=3", *overrides])
    assert [entry["step"] for entry in summary["selection"]["history"]] == [3]
    with (tmp_path / "run" / "logs" / "metrics.csv").open() as handle:
        logged = [row for row in csv.DictReader(handle) if row.get("val/mA")]
    assert [int(row["step"]) for row in logged] == [3]
    assert float(logged[0]["val/mA"]) == pytest.approx(summary["selection"]["history"][0]["mA"], abs=1e-4)


# Each task's test figures come from these splits of the synthetic world's sets; selecting on
# (or training on) any of them must be refused before anything is read or trained.
TEST_SIDE = [
    ("t2i", "cuhk-pedes", ["test"]),
    ("attributes", "pa100k", ["test"]),
    ("reid", "market1501", ["test", "query", "gallery"]),
    ("parsing", "lip", ["test", "val"]),          # LIP reports on its val split
    ("search", "prw", ["test", "query", "gallery"]),
]


@pytest.mark.parametrize("task, folder, splits", TEST_SIDE, ids=[t for t, _, _ in TEST_SIDE])
def test_every_task_refuses_to_select_or_train_on_the_test_split(small_world, tmp_path, task, folder, splits):
    world, _ = small_world
    for key in ("data.val_split", "data.train_split"):
        for split in splits:
            out = tmp_path / f"{key}-{split}"
            with pytest.raises(UsageError, match=f"{key}='{split}' is the split .* test figures come from"):
                finetune_task(task, f"configs/finetune/{task}_tiny.yaml",
                              [f"output_dir={out}", f"data.root={world / folder}", f"{key}={split}"])
            assert not out.exists()               # refused before the run folder is made
