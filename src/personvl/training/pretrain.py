"""``pretrain(config)``: a recipe, a captioned person dataset -> trained encoders.

Single process on CPU or GPU, multi-GPU or multi-node DDP through Lightning (``trainer.devices``,
``trainer.num_nodes``, ``trainer.strategy=ddp``; launched by torchrun or SLURM), mixed
precision, gradient accumulation and clipping, warm-up + cosine schedule, per-module learning
rates. The data is a dataset split read through ``load_dataset`` (identity-aware P x K batches)
or, at scales a folder walk does not suit, a shard folder streamed with ``data.dataset: shards``
(plain shuffled batches; see ``PretrainData``). The run directory holds the resolved ``config.yaml``, ``checkpoints/`` (atomic, the last
K plus ``last.ckpt``), CSV and TensorBoard logs, and the trained encoder as ``model/``
(``create_model(..., weights=run/model)`` or ``load_model(run/model)`` reads it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import BatchSampler

from personvl.config import load_config
from personvl.data.records import RecordTable
from personvl.errors import PersonvlError, UsageError
from personvl.methods.plip import PLIPConfig
from personvl.methods.registry import METHODS, build_method
from personvl.methods.unipt import UniPTConfig
from personvl.methods.valpat import VALPATConfig
from personvl.training.checkpointing import write_text_atomically
from personvl.training.optim import OptimConfig
from personvl.training.resumable import ResumableDataLoader, ResumableStreamLoader
from personvl.training.task import TrainingTask
from personvl.training.trainer import TrainerConfig, build_trainer, start_run

MODEL_DIR = "model"
SUMMARY_FILE = "summary.json"
LOAD_REPORT_FILE = "load_report.json"
SHARDS = "shards"


@dataclass
class DataConfig:
    dataset: str = "cuhk-pedes"        # any load_dataset name, or "shards": root is a shard folder
    root: str = ""
    split: str = "train"
    identities_per_batch: int = 8      # P: identity-aware batches of P x K images
    images_per_identity: int = 2       # K
    workers: int = 2
    transform: str = "plip"            # augmentation recipe; size and normalisation follow the model
    in_memory: bool = False            # decode and resize every image, tokenise every caption, once
    skip_missing: bool = False
    batch_size: int = 0                # shards: images per batch (0: P x K)
    samples_per_epoch: int = 0         # shards: samples an epoch over all ranks (0: the split's size)
    shuffle_buffer: int = 1000         # shards: samples shuffled together as they stream in
    options: dict[str, Any] = field(default_factory=dict)   # the reader's own (luperson: annotations=FILE)


WEIGHT_PARTS = ("image", "text")


@dataclass
class ModelSpec:
    """The encoder a run starts from, as ``personvl.models.open_model`` reads it.

    ``weights``: one source for the whole model, or one per tower, ``{image: ..., text: ...}``
    (``model.weights.image=FILE model.weights.text=DIR`` on the command line); each a path or
    a published name (``openai``, ``resnet50.tv_in1k``, ``bert-base-uncased``); a tower set to
    null (``model.weights.image=null``) starts as initialised."""

    name: str = "tiny-plip-rn50"       # a registered architecture or a saved model folder
    weights: str | dict[str, str | None] | None = None
    tokenizer: str | None = None       # default: the one beside the text weights, else the model's own
    options: dict[str, Any] = field(default_factory=dict)   # a registered architecture's options

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            unknown = sorted(set(self.weights) - set(WEIGHT_PARTS))
            if unknown:
                raise UsageError(f"unknown config key 'model.weights.{unknown[0]}' (a tower's weights: "
                                 f"model.weights.image, model.weights.text)")
            self.weights = {part: source for part, source in self.weights.items() if source is not None} or None


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
    """Tokenises one caption in a loader worker: {input_ids, attention_mask} of one row.

    ``known`` captions are tokenised up front, a few thousand to a call (the tokenizer pads to
    its fixed length, so a row is the same either way), and looked up after that."""

    CHUNK = 4096

    def __init__(self, tokenizer, known: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        distinct = list(dict.fromkeys(known))
        for start in range(0, len(distinct), self.CHUNK):
            chunk = distinct[start:start + self.CHUNK]
            batch = tokenizer(chunk)
            self.rows.update(zip(chunk, zip(batch.input_ids, batch.attention_mask)))

    def __call__(self, caption: str) -> dict[str, torch.Tensor]:
        row = self.rows.get(caption)
        if row is None:
            batch = self.tokenizer([caption])
            row = batch.input_ids[0], batch.attention_mask[0]
        return {"input_ids": row[0], "attention_mask": row[1]}


def collate_pretraining(samples):
    from personvl.data.datasets import collate_samples

    batch = collate_samples(samples)
    batch.update(batch.pop("tokens", {}))
    return batch


class PretrainData(pl.LightningDataModule):
    """The training batches of one split; the loader is built in ``train_dataloader`` so that
    under DDP it sees its rank.

    From records (any ``load_dataset`` split): identity-aware P x K batches, exact resume at any
    step; with ``data.in_memory`` the images are decoded and resized to ``image_size`` once, on
    the first call, and the captions tokenised once (the same batches, with less work per step).
    From a shard folder (``records`` None, ``data.dataset: shards``): a stream cannot be
    grouped by identity, so batches are ``data.batch_size`` images as the shuffle buffer
    delivers them, whatever their identities (PLIP's and UniPT's identity-aware losses take any
    layout; an identity may have a single image in a batch). Every rank reads
    ``data.samples_per_epoch`` / world size samples an epoch, so DDP ranks take equal steps.
    Resume from shards is exact at epoch boundaries and, with the same ranks, workers and batch
    size, mid-epoch too, at the cost of reading again the part of the epoch already trained
    (``ResumableStreamLoader``).
    """

    def __init__(self, config: DataConfig, records, transform, tokenizer, seed: int,
                 image_size: tuple[int, int] | None = None, progress: bool = True):
        super().__init__()
        if config.in_memory and image_size is None:
            raise ValueError("data.in_memory needs the image_size the transform resizes to")
        self.config = config
        self.records = records
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed
        self.image_size = image_size
        self.progress = progress

    def train_dataloader(self) -> ResumableDataLoader | ResumableStreamLoader:
        if self.records is None:
            return self._shard_loader()
        from personvl.data.datasets import PersonImageDataset, preload_images
        from personvl.data.samplers import IdentitySampler

        cfg = self.config
        images, captions = None, ()
        if cfg.in_memory:
            images = preload_images(self.records, self.image_size, threads=cfg.workers or None, progress=self.progress)
            captions = [caption for record in self.records for caption in record.captions]
        dataset = PersonImageDataset(self.records, self.transform, CaptionTokenizer(self.tokenizer, captions),
                                     seed=self.seed, images=images)
        sampler = IdentitySampler([r.pid for r in self.records], cfg.identities_per_batch, cfg.images_per_identity,
                                  seed=self.seed)
        batches = BatchSampler(sampler, cfg.identities_per_batch * cfg.images_per_identity, drop_last=True)
        return ResumableDataLoader(dataset, batches, num_workers=cfg.workers, collate_fn=collate_pretraining,
                                   persistent_workers=cfg.workers > 0)

    def _shard_loader(self) -> ResumableStreamLoader:
        from personvl.data.datasets import ShardImageDataset

        cfg = self.config
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        samples = cfg.samples_per_epoch or shard_split_size(cfg)
        batch_size = cfg.batch_size or cfg.identities_per_batch * cfg.images_per_identity
        dataset = ShardImageDataset(cfg.root, cfg.split, self.transform, CaptionTokenizer(self.tokenizer),
                                    seed=self.seed, shuffle_buffer=cfg.shuffle_buffer, samples_per_epoch=samples,
                                    rank=rank, world_size=world_size)
        readers = world_size * max(1, cfg.workers)
        if len(dataset.files) < readers:
            raise UsageError(f"{cfg.root}: {len(dataset.files)} {cfg.split} shard(s) cannot feed {world_size} rank(s) x "
                             f"{max(1, cfg.workers)} loader worker(s); write smaller shards or set fewer data.workers")
        per_reader = samples // readers
        if per_reader < batch_size:
            raise UsageError(f"data.batch_size={batch_size} exceeds the {per_reader} samples each of {world_size} rank(s) x "
                             f"{max(1, cfg.workers)} loader worker(s) reads an epoch; lower it or raise data.samples_per_epoch")
        batches = max(1, cfg.workers) * (per_reader // batch_size)
        return ResumableStreamLoader(dataset, batch_size, batches, num_workers=cfg.workers,
                                     collate_fn=collate_pretraining, persistent_workers=cfg.workers > 0)


def shard_split_size(config: DataConfig) -> int:
    """Samples of ``config.split`` in the shard folder ``config.root``, from its manifest."""
    from personvl.data.shards import read_manifest, shard_files

    manifest = read_manifest(config.root)
    shard_files(config.root, config.split, manifest)   # a clear error for a split the folder lacks
    return int(manifest["splits"][config.split]["samples"])


def _training_split(config: DataConfig):
    """(records or None for shards, image count, attribute names, attributes' positive ratios).

    Records without identities (LUPerson) train instance-level: each image is its own identity
    (labels 0..N-1 in the split's order), so P x K batches are P images (K must be 1: more
    would repeat an image within a batch). A split where some records have an identity and
    some do not is refused: which of its images show the same person cannot be told."""
    from personvl.data import load_dataset

    if config.dataset == SHARDS:
        from personvl.data.shards import read_manifest

        if config.in_memory:
            raise UsageError("data.in_memory holds a dataset split in memory; shards stream from disk, "
                             "set data.in_memory=false or read the split with its dataset format")
        if config.options:
            raise UsageError(f"data.options ({', '.join(sorted(config.options))}) are a dataset reader's; shards were "
                             "written with them already: leave data.options empty")

        size = shard_split_size(config)
        if not size:
            raise PersonvlError(f"the shard folder {config.root} has no {config.split} samples")
        # Positive ratios would take a pass over every shard: the attribute loss weighs all alike.
        return None, size, read_manifest(config.root).get("attribute_names") or [], None
    records = load_dataset(config.dataset, config.root, config.split, skip_missing=config.skip_missing,
                           **config.options)
    if not records:
        raise PersonvlError(f"{config.dataset} at {config.root} has no {config.split} records")
    _label_instances(records, config)
    attribute_names = getattr(records, "attribute_names", None) or []
    ratio = None
    if attribute_names:
        labelled = [r.attributes for r in records if r.attributes is not None]
        ratio = torch.tensor(labelled, dtype=torch.float32).mean(dim=0).clamp(1e-3, 1 - 1e-3) if labelled else None
    return records, len(records), attribute_names, ratio


def _label_instances(records, config: DataConfig) -> None:
    if isinstance(getattr(records, "records", records), RecordTable):
        return      # tables hold an identity on every record
    unlabelled = [index for index, record in enumerate(records) if record.pid is None]
    if not unlabelled:
        return
    if len(unlabelled) < len(records):
        example = records[unlabelled[0]].image_path
        raise PersonvlError(f"{config.dataset} at {config.root} ({config.split}): {len(unlabelled)} of {len(records)} records "
                            f"have no identity (e.g. {example}) and the others have one; give every record an "
                            "identity, or none (each image is then its own identity)")
    if config.images_per_identity != 1:
        raise UsageError(f"{config.dataset} at {config.root} has no identities: each image is its own, so "
                         f"data.images_per_identity={config.images_per_identity} would repeat every image in its batch; "
                         "set data.images_per_identity=1 (and the batch size as data.identities_per_batch)")
    for index, record in enumerate(records):
        record.pid = index


def refuse_frozen_without_weights(encoder) -> None:
    """A frozen parameter no weight source filled would stay random for the whole run."""
    from personvl.models.checkpoints import frozen_without_weights
    from personvl.models.registry import model_entry

    frozen = frozen_without_weights(encoder)
    if not frozen:
        return
    parts = sorted({"image" if name.startswith("visual.") else "text" for name in frozen})
    modules = sorted({".".join(name.split(".")[:4]) for name in frozen})
    shown = ", ".join(modules[:6]) + (f", ... ({len(modules)} modules)" if len(modules) > 6 else "")
    keys = " and ".join(f"model.weights.{part}=..." for part in parts)
    options = [name for name in model_entry(encoder.name).options if name.startswith("frozen_")]
    unfreeze = (" or, to train from scratch, unfreeze them: " + " ".join(f"model.options.{o}=0" for o in options)
                if options else "")
    raise UsageError(f"{encoder.name} freezes {len(frozen)} parameters that no weights fill ({shown}): they would stay "
                     f"at their random initialisation. Name the weights to start from ({keys}){unfreeze}")


def with_learned_temperature(method: torch.nn.Module):
    """The method's encoder, carrying the temperature the method learned for it.

    A method whose encoder has no ``logit_scale`` (PLIP's architecture, trained with the
    InfoNCE form of IVLC) keeps its own; the exported model takes it along, so that zero-shot
    scoring (the captioner's phrase softmax) uses the scale its similarities were trained at
    instead of a default."""
    import dataclasses

    encoder = method.encoder
    learned = getattr(method, "logit_scale", None)
    if encoder.logit_scale is not None or not isinstance(learned, torch.nn.Parameter):
        return encoder
    value = float(learned.detach())
    encoder.config = dataclasses.replace(encoder.config, init_logit_scale=value)
    encoder.logit_scale = torch.nn.Parameter(torch.tensor(value, device=learned.device))
    return encoder


def pretrain(config: PretrainConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Run a pre-training recipe; returns the run summary (also in ``output_dir/summary.json``)."""
    from personvl.data.transforms import build_transform
    from personvl.models import open_model, save_model

    if not isinstance(config, PretrainConfig):
        config = load_pretrain_config(config, overrides)
    started = time.perf_counter()
    out, checkpoint = start_run(config, resume)

    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    encoder = open_model(config.model.name, config.model.weights, tokenizer=config.model.tokenizer,
                           **config.model.options).train()
    refuse_frozen_without_weights(encoder)
    if encoder.load_report is not None:
        for line in encoder.load_report.summary_lines():
            echo(f"weights: {line}")
        if rank_zero_only.rank == 0:
            (out / LOAD_REPORT_FILE).write_text(json.dumps(encoder.load_report.to_dict(), indent=1) + "\n",
                                                encoding="utf-8")
    records, size, attribute_names, ratio = _training_split(config.data)
    preprocess = encoder.config.preprocess
    transform = build_transform(config.data.transform, train=True, height=preprocess.input_size[0], width=preprocess.input_size[1],
                                mean=tuple(preprocess.mean), std=tuple(preprocess.std))
    section = getattr(config, config.method)
    method = build_method(config.method, encoder, section, attribute_count=len(attribute_names),
                          attribute_positive_ratio=ratio)
    task = TrainingTask(method, config.optim, config.trainer.max_steps, config.trainer.max_nonfinite_in_row,
                        seed=config.trainer.seed)
    data = PretrainData(config.data, records, transform, encoder.tokenizer, config.trainer.seed,
                        image_size=tuple(preprocess.input_size), progress=config.trainer.progress_bar)
    trainer = build_trainer(config.trainer, out)
    source = f"shards in {config.data.root}" if records is None else config.data.dataset
    echo(f"pre-training {config.method} ({config.model.name}) on {size} {config.data.split} images ({source}) "
         f"for {config.trainer.max_steps} steps -> {out}")
    trainer.fit(task, datamodule=data, ckpt_path=checkpoint)

    summary: dict[str, Any] = {"method": config.method, "model": config.model.name, "steps": trainer.global_step,
                               "nonfinite_steps": task.nonfinite_total,
                               "seconds": round(time.perf_counter() - started, 2)}
    if encoder.load_report is not None:
        summary["initial_weights"] = encoder.load_report.sources
    if trainer.is_global_zero:
        save_model(with_learned_temperature(method).eval(), out / MODEL_DIR)
        summary["model_dir"] = str(out / MODEL_DIR)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        summary["last_losses"] = metrics
        write_text_atomically(out / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
    return summary
