"""``pretrain(config)``: a recipe, a captioned person dataset -> trained encoders.

Single process on CPU or GPU, multi-GPU or multi-node DDP through Lightning (``trainer.devices``,
``trainer.num_nodes``, ``trainer.strategy=ddp``; launched by torchrun or SLURM), mixed
precision, gradient accumulation and clipping, warm-up + cosine schedule, per-module learning
rates. The run directory holds the resolved ``config.yaml``, ``checkpoints/`` (atomic, the last
K plus ``last.ckpt``), CSV and TensorBoard logs, and the trained encoder as ``model/``
(``create_model(..., weights=run/model)`` or ``load_model(run/model)`` reads it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import BatchSampler

from personvl.config import load_config, save_config
from personvl.errors import PersonvlError, UsageError
from personvl.methods.plip import PLIPConfig
from personvl.methods.registry import METHODS, build_method
from personvl.methods.unipt import UniPTConfig
from personvl.methods.valpat import VALPATConfig
from personvl.training.optim import OptimConfig
from personvl.training.resumable import ResumableDataLoader
from personvl.training.task import TrainingTask
from personvl.training.trainer import TrainerConfig, build_trainer, latest_checkpoint

MODEL_DIR = "model"
SUMMARY_FILE = "summary.json"


@dataclass
class DataConfig:
    dataset: str = "cuhk-pedes"
    root: str = ""
    split: str = "train"
    identities_per_batch: int = 8      # P: identity-aware batches of P x K images
    images_per_identity: int = 2       # K
    workers: int = 2
    transform: str = "plip"            # augmentation recipe; size and normalisation follow the model
    skip_missing: bool = False


@dataclass
class ModelSpec:
    name: str = "tiny-plip-rn50"
    weights: str | None = None
    tokenizer: str | None = None


@dataclass
class PretrainConfig:
    method: str = "plip"
    output_dir: str = "runs/pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    plip: PLIPConfig = field(default_factory=PLIPConfig)
    valpat: VALPATConfig = field(default_factory=VALPATConfig)
    unipt: UniPTConfig = field(default_factory=UniPTConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")


def load_pretrain_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> PretrainConfig:
    return load_config(PretrainConfig, path, overrides)


class CaptionTokenizer:
    """Tokenises one caption in a loader worker: {input_ids, attention_mask} of one row."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, caption: str) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([caption])
        return {"input_ids": batch.input_ids[0], "attention_mask": batch.attention_mask[0]}


def collate_pretraining(samples):
    from personvl.data.datasets import collate_samples

    batch = collate_samples(samples)
    batch.update(batch.pop("tokens", {}))
    return batch


class PretrainData(pl.LightningDataModule):
    """Identity-aware P x K batches of one dataset split; the sampler is built in
    ``train_dataloader`` so that under DDP it sees its rank."""

    def __init__(self, config: DataConfig, records, transform, tokenizer, seed: int):
        super().__init__()
        self.config = config
        self.records = records
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed

    def train_dataloader(self) -> ResumableDataLoader:
        from personvl.data.datasets import PersonImageDataset
        from personvl.data.samplers import IdentitySampler

        cfg = self.config
        dataset = PersonImageDataset(self.records, self.transform, CaptionTokenizer(self.tokenizer), seed=self.seed)
        sampler = IdentitySampler([r.pid for r in self.records], cfg.identities_per_batch, cfg.images_per_identity,
                                  seed=self.seed)
        batches = BatchSampler(sampler, cfg.identities_per_batch * cfg.images_per_identity, drop_last=True)
        return ResumableDataLoader(dataset, batches, num_workers=cfg.workers, collate_fn=collate_pretraining,
                                   persistent_workers=cfg.workers > 0)


def pretrain(config: PretrainConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Run a pre-training recipe; returns the run summary (also in ``output_dir/summary.json``)."""
    from personvl.data import load_dataset
    from personvl.data.transforms import build_transform
    from personvl.models import create_model, save_model

    if not isinstance(config, PretrainConfig):
        config = load_pretrain_config(config, overrides)
    started = time.perf_counter()
    out = Path(config.output_dir)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None and resume:
        raise PersonvlError(f"nothing to resume: no {out}/checkpoints/last.ckpt")
    if checkpoint is not None and not resume:
        raise PersonvlError(f"{out} already holds a run; pass --resume to continue it or choose another output_dir")
    save_config(config, out)

    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    encoder = create_model(config.model.name, config.model.weights, tokenizer=config.model.tokenizer).train()
    records = load_dataset(config.data.dataset, config.data.root, config.data.split,
                           skip_missing=config.data.skip_missing)
    if not records:
        raise PersonvlError(f"{config.data.dataset} at {config.data.root} has no {config.data.split} records")
    preprocess = encoder.config.preprocess
    transform = build_transform(config.data.transform, train=True, height=preprocess.input_size[0], width=preprocess.input_size[1],
                                mean=tuple(preprocess.mean), std=tuple(preprocess.std))
    attribute_names = getattr(records, "attribute_names", None) or []
    ratio = None
    if attribute_names:
        labelled = [r.attributes for r in records if r.attributes is not None]
        ratio = torch.tensor(labelled, dtype=torch.float32).mean(dim=0).clamp(1e-3, 1 - 1e-3) if labelled else None
    section = getattr(config, config.method)
    method = build_method(config.method, encoder, section, attribute_count=len(attribute_names),
                          attribute_positive_ratio=ratio)
    task = TrainingTask(method, config.optim, config.trainer.max_steps, config.trainer.max_nonfinite_in_row,
                        seed=config.trainer.seed)
    data = PretrainData(config.data, records, transform, encoder.tokenizer, config.trainer.seed)
    trainer = build_trainer(config.trainer, out)
    echo(f"pre-training {config.method} ({config.model.name}) on {len(records)} {config.data.dataset} "
         f"{config.data.split} images for {config.trainer.max_steps} steps -> {out}")
    trainer.fit(task, datamodule=data, ckpt_path=checkpoint)

    summary: dict[str, Any] = {"method": config.method, "model": config.model.name, "steps": trainer.global_step,
                               "nonfinite_steps": task.nonfinite_total,
                               "seconds": round(time.perf_counter() - started, 2)}
    if trainer.is_global_zero:
        save_model(method.encoder.eval(), out / MODEL_DIR)
        summary["model_dir"] = str(out / MODEL_DIR)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        summary["last_losses"] = metrics
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary
