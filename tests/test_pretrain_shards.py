"""Pre-training streamed from webdataset shards: the small world's cuhk-pedes train split
converted with `personvl data convert ... --to shards`, trained a few steps, resumed."""

import json
import math

import lightning.pytorch as pl
import pytest
import torch

import personvl.training.pretrain as recipe

from personvl.cli import main
from personvl.errors import PersonvlError, UsageError
from personvl.models import load_model
from personvl.training.pretrain import pretrain

RECIPE = "configs/pretrain/plip_tiny.yaml"
COMMON = ["data.dataset=shards", "data.in_memory=false", "data.batch_size=8", "data.workers=0", "data.shuffle_buffer=16",
          "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
          "plip.decoder_width=16"]


@pytest.fixture(scope="module")
def shards(small_world, tmp_path_factory):
    world, _ = small_world
    out = tmp_path_factory.mktemp("shards") / "cuhk-pedes"
    assert main(["data", "convert", "cuhk-pedes", str(world / "cuhk-pedes"), "--to", "shards", str(out),
                 "--split", "train", "--shard-size", "16"]) == 0
    return out


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # two spinning threads on a busy two-core machine cost far more
    yield
    torch.set_num_threads(threads)


def test_pretrain_streams_shards_and_exports_the_encoder(shards, tmp_path, capsys):
    manifest = json.loads((shards / "manifest.json").read_text())
    images = manifest["splits"]["train"]["samples"]
    out = tmp_path / "run"
    summary = pretrain(RECIPE, [f"data.root={shards}", f"output_dir={out}", "trainer.max_steps=7", *COMMON])
    assert f"on {images} train images (shards in {shards})" in capsys.readouterr().out
    assert summary["steps"] == 7 and summary["nonfinite_steps"] == 0
    losses = summary["last_losses"]
    assert {"train/ivlc", "train/tic", "train/iap", "train/loss"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())
    model = load_model(out / "model")
    assert model.encode_text(["a man in a blue shirt"]).shape[0] == 1
    # An epoch is the split's images in batches of 8: the seventh step is in the second epoch.
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state == {"epoch": 7 // (images // 8), "batches_trained": 7 % (images // 8)}


class Interrupted(Exception):
    pass


class InterruptAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Interrupted   # after ModelCheckpoint has written the step's checkpoint


# An epoch is the 44 images in 5 batches of 8: a checkpoint at step 3 is mid-epoch, one at
# step 5 closes the first epoch. The last step is a checkpoint too, to compare whole states.
@pytest.mark.parametrize("checkpoint_every, steps", [(3, 9), (5, 10)], ids=["mid-epoch", "epoch-end"])
def test_interrupted_shard_run_resumes_to_the_same_weights(shards, tmp_path, monkeypatch, checkpoint_every, steps):
    base = [f"data.root={shards}", *COMMON, f"trainer.checkpoint_every_n_steps={checkpoint_every}",
            f"trainer.max_steps={steps}"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain(RECIPE, [*base, f"output_dir={straight}"], echo=lambda *_: None)
    build_trainer = recipe.build_trainer

    def build_trainer_interrupted(config, out):
        trainer = build_trainer(config, out)
        trainer.callbacks.append(InterruptAt(checkpoint_every + 1))
        return trainer

    monkeypatch.setattr(recipe, "build_trainer", build_trainer_interrupted)
    with pytest.raises(Interrupted):
        pretrain(RECIPE, [*base, f"output_dir={resumed}"], echo=lambda *_: None)
    monkeypatch.undo()
    pretrain(RECIPE, [*base, f"output_dir={resumed}"], resume=True, echo=lambda *_: None)
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == steps
    assert [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])] == []


def test_bad_shard_roots_give_clear_errors(shards, tmp_path):
    with pytest.raises(PersonvlError, match=r"manifest\.json: not found; expected the manifest of a shard folder"):
        pretrain(RECIPE, [f"data.root={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'a'}", *COMMON],
                 echo=lambda *_: None)
    with pytest.raises(UsageError, match=r"no 'test' shards \(splits: train\)"):
        pretrain(RECIPE, [f"data.root={shards}", "data.split=test", f"output_dir={tmp_path / 'b'}", *COMMON],
                 echo=lambda *_: None)
    with pytest.raises(UsageError, match=r"data.in_memory holds a dataset split in memory; shards stream"):
        pretrain(RECIPE, [f"data.root={shards}", f"output_dir={tmp_path / 'd'}", *COMMON, "data.in_memory=true"],
                 echo=lambda *_: None)
    with pytest.raises(UsageError, match=r"data.batch_size=64 exceeds the \d+ samples each of 1 rank\(s\) x 1"):
        pretrain(RECIPE, [f"data.root={shards}", f"output_dir={tmp_path / 'c'}", *COMMON, "data.batch_size=64"],
                 echo=lambda *_: None)
