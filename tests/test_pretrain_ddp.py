"""Two-process DDP pre-training on the CPU (gloo): each rank trains on its own part of the
P x K draw, the contrast is global, and the weights stay identical."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from personvl.training.pretrain import pretrain, load_pretrain_config
    import lightning.pytorch as pl

    world, out = sys.argv[1], sys.argv[2]
    config = load_pretrain_config("configs/pretrain/plip_tiny.yaml", [
        f"data.root={world}/cuhk-pedes", f"output_dir={out}", "trainer.max_steps=12", "trainer.devices=2",
        "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.progress_bar=false", "data.workers=0",
        "data.identities_per_batch=4", "data.images_per_identity=2", "trainer.log_every_n_steps=1",
        "trainer.checkpoint_every_n_steps=6", "plip.decoder_width=16", "optim.warmup_steps=0"])

    class Fingerprint(pl.Callback):
        def __init__(self):
            self.batches, self.ivlc = [], []
        def on_train_batch_start(self, trainer, task, batch, batch_idx):
            self.batches.append([trainer.current_epoch, batch["index"].tolist()])
        def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
            self.ivlc.append(float(trainer.callback_metrics["train/ivlc"]))
        def on_train_end(self, trainer, task):
            total = sum(float(p.double().sum()) for p in task.method.parameters())
            with open(f"{out}/rank{trainer.global_rank}.json", "w") as handle:
                json.dump({"rank": trainer.global_rank, "world_size": trainer.world_size, "sum": total,
                           "batches": self.batches, "ivlc": self.ivlc}, handle)

    import personvl.training.pretrain as module
    original = module.build_trainer
    def with_fingerprint(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(Fingerprint())
        return trainer
    module.build_trainer = with_fingerprint
    pretrain(config, echo=lambda *_: None)
''')


def test_two_process_ddp_trains_in_sync(small_world, tmp_path):
    from personvl.data import load_dataset
    from personvl.data.samplers import IdentitySampler

    world, _ = small_world
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(script), str(world), str(out)], capture_output=True, text=True,
                            timeout=600, cwd=".")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # Rank r trains on batches r, r + 2, ... of the single-process P x K draw of each epoch.
    pids = [r.pid for r in load_dataset("cuhk-pedes", world / "cuhk-pedes", "train")]
    for rank, seen in enumerate(ranks):
        assert len(seen["batches"]) == 12
        epochs = sorted({epoch for epoch, _ in seen["batches"]})
        expected = []
        for epoch in epochs:
            draw = IdentitySampler(pids, 4, 2, seed=0, rank=0, world_size=1)
            draw.set_epoch(epoch)
            everything = [b.tolist() for b in draw.batches()]
            expected += [[epoch, b] for b in everything[rank::2][:len(everything) // 2]]
        assert seen["batches"] == expected[:12]
    assert all(set(a).isdisjoint(b) for (_, a), (_, b) in zip(ranks[0]["batches"], ranks[1]["batches"]))
    # The contrast is global: both ranks compute the same IVLC from the gathered batch.
    assert len(ranks[0]["ivlc"]) == 12
    assert ranks[0]["ivlc"] == pytest.approx(ranks[1]["ivlc"], rel=1e-5)

    assert ranks[0]["sum"] == ranks[1]["sum"]              # identical weights on both ranks
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 12
    rows = (out / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("train/loss")]) for r in rows[1:] if r.split(",")[header.index("train/loss")]]
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3   # the loss goes down
