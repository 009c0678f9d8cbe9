"""Image re-ID transfer (Market-1501, DukeMTMC-reID, MSMT17, CUHK03): the strong baseline.

Fine-tuning trains the image tower with a BNNeck (batch norm between the embedding and an
identity classifier without bias), the identity loss with label smoothing on the normalised
side and the batch-hard triplet loss on the embedding itself, over P x K batches of
augmented images (flip, pad + crop, random erasing), with a linear learning-rate warm-up.
Linear probing (``mode: linear_probe``) keeps the encoder frozen and learns only a linear
projection of its embeddings with the same two losses.

Evaluation uses the Market-1501 protocol (same identity *and* camera removed from each
query's gallery) with cosine distance, optionally k-reciprocal re-ranked. Which feature is
compared is ``evaluation.feature``: ``embedding`` (default), the encoder's L2-normalised
embedding, so the saved model is an ordinary encoder usable for search and text retrieval;
or ``bnneck``, BoT's choice, the BNNeck's output, saved as the model folder's re-ID head.
For ResNet towers, BoT's last stride of 1 is ``model.options.last_stride: 1``. A config
naming another dataset under ``evaluation`` measures domain generalisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from personvl.errors import UsageError
from personvl.tasks.finetuning import (
    embed_records, fit_probe, identity_batches, model_transform, probe_selection,
)
from personvl.tasks.runner import (
    RANKING_METRICS, EvaluationTarget, Stage, Task, TaskData, Trained, task_config,
)
from personvl.training.optim import OptimConfig



@dataclass
class ReidLosses:
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    label_smoothing: float = 0.1
    margin: float = 0.3


@dataclass
class ReidData(TaskData):
    dataset: str = "market1501"
    transform: str = "reid"


def strong_baseline_optim() -> OptimConfig:
    """The strong re-ID baseline's Adam (lr 3.5e-4, weight decay 5e-4, warm-up)."""
    return OptimConfig("adam", lr=3.5e-4, weight_decay=5e-4, warmup_steps=10)


FEATURES = ("embedding", "bnneck")


@dataclass
class ReidEvaluation(EvaluationTarget):
    rerank: bool = False               # k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)
    # Which feature a fine-tuned model is evaluated (and saved) with: the encoder's embedding
    # (before the BNNeck, what the triplet loss shapes; the saved model stays a plain encoder)
    # or BoT's choice, the BNNeck's output (saved as the model's re-ID head).
    feature: str = "embedding"

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise UsageError(f"evaluation.feature must be one of {', '.join(FEATURES)}, got {self.feature!r}")


ReidConfig = task_config("ReidConfig", __name__, probed=True, output_dir="runs/reid", data=ReidData,
                         optim=strong_baseline_optim, evaluation=ReidEvaluation, loss=ReidLosses)


class ReidMethod(nn.Module):
    """Encoder image tower + BNNeck + identity classifier; ``forward`` gives the named losses."""

    def __init__(self, encoder, num_identities: int, losses: ReidLosses, feature: str = "embedding"):
        super().__init__()
        self.encoder = encoder
        self.losses = losses
        self.feature = feature
        # Re-ID reads images only; a text tower left trainable would be a parameter without a
        # gradient, which DDP refuses.
        encoder.text.requires_grad_(False)
        self.bnneck = nn.BatchNorm1d(encoder.embed_dim)
        self.bnneck.bias.requires_grad_(False)   # BNNeck: no shift before the bias-free classifier
        self.classifier = nn.Linear(encoder.embed_dim, num_identities, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, batch: dict, progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        from personvl.objectives import batch_hard_triplet_loss, id_loss

        features = self.encoder.visual(batch["image"])
        pids = batch["pid"]
        cfg = self.losses
        losses = {"id": id_loss(self.classifier(self.bnneck(features)), pids, cfg.label_smoothing),
                  "triplet": batch_hard_triplet_loss(features, pids, cfg.margin)}
        losses["loss"] = cfg.id_weight * losses["id"] + cfg.triplet_weight * losses["triplet"]
        return losses

    def parameter_groups(self) -> list[dict]:
        # The text tower takes no part: it is left out of the optimiser.
        return [{"params": [*self.encoder.visual.parameters(), *self.bnneck.parameters(),
                            *self.classifier.parameters()], "name": "image+heads"}]


class ReidProjection(nn.Module):
    """A linear map of frozen L2-normalised embeddings (the linear probe's retrieval feature)."""

    def __init__(self, dim: int):
        super().__init__()
        self.projection = nn.Linear(dim, dim)
        with torch.no_grad():
            self.projection.weight.copy_(torch.eye(dim))
            self.projection.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(features)


def reid_scores(query_features, gallery_features, query, gallery, rerank: bool = False) -> dict[str, Any]:
    from personvl.evaluation import reid_metrics

    return reid_metrics(query_features, gallery_features, _pids(query), _pids(gallery), _camids(query),
                        _camids(gallery), rerank=rerank)


def _pids(records) -> np.ndarray:
    if any(r.pid is None for r in records):
        raise UsageError("re-ID evaluation needs an identity on every record")
    return np.array([r.pid for r in records], dtype=np.int64)


def _camids(records) -> np.ndarray:
    return np.array([-1 if r.camid is None else r.camid for r in records], dtype=np.int64)


def _project(features: torch.Tensor, head: nn.Module | None) -> torch.Tensor:
    if head is None:
        return features
    with torch.no_grad():
        return nn.functional.normalize(head(features), dim=1)


class BNNeckFeature(nn.Module):
    """BoT's evaluation feature: the BNNeck (batch norm, frozen statistics) applied to the
    encoder's embedding."""

    def __init__(self, dim: int):
        super().__init__()
        self.bnneck = nn.BatchNorm1d(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.bnneck(features)


def query_gallery(records_or_pair):
    """(query, gallery): a re-ID test pair as read, or a split searched against itself."""
    if isinstance(records_or_pair, tuple):
        return records_or_pair
    return records_or_pair, records_or_pair


def _plot(query_features, gallery_features, query, gallery, metrics: dict, out: Path, shown: int = 6) -> None:
    from personvl.evaluation import plot_cmc, plot_reid_grid, ranked_gallery

    plot_cmc(metrics["cmc"], out / "cmc.png", title="CMC (re-ID)")
    rows = min(shown, len(query))
    k = min(8, len(gallery))
    ranked, correct = ranked_gallery(query_features[:rows], gallery_features, _pids(query)[:rows], _pids(gallery), k=k,
                                     query_camids=_camids(query)[:rows], gallery_camids=_camids(gallery))
    plot_reid_grid([r.image_path for r in query[:rows]], [r.image_path for r in gallery], ranked, correct,
                   out / "ranking.png")


class ReidTask(Task):
    """Images query images of other cameras: the image tower is fine-tuned (or probed) and
    scored with the Market-1501 protocol; its head is BoT's BNNeck feature or a probe's
    projection, where there is one."""

    name = "reid"
    config_type = ReidConfig
    metric = "mAP"
    reported = RANKING_METRICS
    identities = True

    def test_splits(self, dataset: str, root: str, options: dict[str, Any]) -> set[str]:
        import personvl.data as data_module

        splits = data_module.dataset_splits(dataset, root, **options)
        return {"query", "gallery"} if {"query", "gallery"} <= set(splits) else {"test"}

    def read_inputs(self, dataset: str, root: str, split: str, options: dict[str, Any], skip_missing: bool = False):
        """``test``: the set's query/gallery pair (where it has one); any other split is
        searched all-against-all (each image queries the others)."""
        import personvl.data as data_module

        if split == "test" and self.test_splits(dataset, root, options) == {"query", "gallery"}:
            return tuple(data_module.load_dataset(dataset, root, part, skip_missing=skip_missing, **options)
                         for part in ("query", "gallery"))
        return data_module.load_dataset(dataset, root, split, skip_missing=skip_missing, **options)

    def stages(self, config: ReidConfig, encoder, train, echo) -> list[Stage]:
        from personvl.data.datasets import PersonImageDataset

        method = ReidMethod(encoder, max(r.pid for r in train) + 1, config.loss, config.evaluation.feature)
        dataset = PersonImageDataset(train, model_transform(encoder, config.data.transform, train=True),
                                     seed=config.trainer.seed)
        pids = [r.pid for r in train]
        return [Stage("", method, dataset,
                      lambda rank, world: identity_batches(pids, config.data, config.trainer.seed, rank, world),
                      config.optim, config.trainer.max_steps,
                      describe=f"fine-tuning {config.model.name} for re-ID on {len(train)} {config.data.dataset} "
                               f"images ({len(set(pids))} identities) for {config.trainer.max_steps} steps")]

    def trained(self, encoder, stages) -> Trained:
        method = stages[-1].method
        if method.feature != "bnneck":
            return Trained(encoder)
        head = BNNeckFeature(encoder.embed_dim)
        head.bnneck.load_state_dict(method.bnneck.state_dict())
        return Trained(encoder, head)

    def probe(self, config: ReidConfig, encoder, train, val_inputs, val_name):
        head, selection = _linear_probe(config, encoder, train, val_inputs, val_name)
        return Trained(encoder, head), selection, config.probe.steps

    def score(self, model: Trained, inputs, settings: ReidEvaluation, plots_dir: Path | None = None) -> dict[str, Any]:
        query, gallery = query_gallery(inputs)
        batch_size = settings.batch_size
        # The BNNeck was trained on the raw embedding; a probe's projection on the normalised one.
        raw = isinstance(model.head, BNNeckFeature)

        def features(records) -> torch.Tensor:
            return _project(embed_records(model.encoder, records, batch_size, normalize=not raw), model.head)

        query_features = features(query)
        gallery_features = query_features if gallery is query else features(gallery)
        rerank = bool(getattr(settings, "rerank", False))
        metrics = reid_scores(query_features, gallery_features, query, gallery, rerank=rerank)
        metrics["rerank"] = rerank
        if plots_dir is not None:
            _plot(query_features, gallery_features, query, gallery, metrics, Path(plots_dir))
        return metrics

    def head_settings(self, head: nn.Module) -> dict[str, Any]:
        kind = "bnneck" if isinstance(head, BNNeckFeature) else "projection"
        return {"kind": kind, "dim": head.bnneck.num_features if kind == "bnneck" else head.projection.in_features}

    def build_head(self, settings: dict[str, Any], encoder) -> nn.Module:
        kinds = {"bnneck": BNNeckFeature, "projection": ReidProjection}
        if settings.get("kind") not in kinds:
            raise UsageError(f"unknown re-ID head kind {settings.get('kind')!r}")
        return kinds[settings["kind"]](int(settings["dim"]))


TASK = ReidTask()


def evaluate(model, dataset: str, root: str | os.PathLike, *, split: str = "test", rerank: bool = False,
             head: Any = None, batch_size: int = 64, plots_dir: str | os.PathLike | None = None,
             dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-ID metrics (R1/R5/R10/mAP/mINP, CMC) of ``model`` (an encoder, a saved folder, whose
    re-ID head is used where it holds one, or a registered name) on ``dataset``: its
    query/gallery pair for ``split="test"``, else the split searched against itself. ``head``:
    a re-ID head module to use instead. ``plots_dir``: write the CMC curve and a ranking grid."""
    from personvl.tasks.runner import evaluate_saved

    if head is not None:
        model = Trained(model, head)
    return evaluate_saved(TASK, model, dataset, root, split=split,
                          settings=ReidEvaluation(batch_size=batch_size, rerank=rerank), plots_dir=plots_dir,
                          dataset_options=dataset_options)


def finetune(config: ReidConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Train (or linearly probe) an encoder for re-ID; returns the run summary (also in
    ``output_dir/summary.json``; the final figures in ``output_dir/metrics.json``)."""
    from personvl.tasks.runner import run

    return run(TASK, config, overrides, resume=resume, echo=echo)


def _linear_probe(config: ReidConfig, encoder, train, val, val_split: str | None):
    from personvl.objectives import batch_hard_triplet_loss, id_loss

    features = embed_records(encoder, train, config.evaluation.batch_size)
    pids = torch.tensor([r.pid for r in train])
    count = int(pids.max()) + 1
    projection = ReidProjection(encoder.embed_dim)
    bnneck = nn.BatchNorm1d(encoder.embed_dim)
    classifier = nn.Linear(encoder.embed_dim, count, bias=False)
    trained = nn.ModuleDict({"projection": projection, "bnneck": bnneck, "classifier": classifier})
    batches = _cycle(identity_batches(pids.tolist(), config.data, config.trainer.seed))

    def loss_fn(module: nn.ModuleDict, index: torch.Tensor) -> torch.Tensor:
        embedded = module["projection"](features[index])
        loss_id = id_loss(module["classifier"](module["bnneck"](embedded)), pids[index], config.loss.label_smoothing)
        loss_triplet = batch_hard_triplet_loss(embedded, pids[index], config.loss.margin)
        return config.loss.id_weight * loss_id + config.loss.triplet_weight * loss_triplet

    validate = None
    if val is not None:
        val_query, val_gallery = query_gallery(val)
        val_features = embed_records(encoder, val_query, config.evaluation.batch_size)
        gallery_features = (val_features if val_gallery is val_query
                            else embed_records(encoder, val_gallery, config.evaluation.batch_size))

        def validate(module: nn.ModuleDict) -> dict[str, Any]:
            projected = _project(val_features, module["projection"])
            gallery = projected if val_gallery is val_query else _project(gallery_features, module["projection"])
            return reid_scores(projected, gallery, val_query, val_gallery)

    metric = config.selection.metric or TASK.metric
    history, kept = fit_probe(trained, loss_fn, batches, config.probe, validate, metric,
                              config.selection.every_n_steps, seed=config.trainer.seed)
    return projection.eval(), probe_selection(history, kept, val_split if validate is not None else None, metric)
def _cycle(batch_sampler):
    """step -> index tensor of the next P x K batch, over as many epochs as needed."""
    state = {"epoch": 0, "iterator": None}

    def draw(step: int) -> torch.Tensor:
        while True:
            if state["iterator"] is None:
                batch_sampler.sampler.set_epoch(state["epoch"])
                state["iterator"] = iter(batch_sampler)
            try:
                return torch.tensor(next(state["iterator"]))
            except StopIteration:
                state["epoch"] += 1
                state["iterator"] = None

    return draw
