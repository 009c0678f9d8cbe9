"""Text-to-image person retrieval transfer (CUHK-PEDES, ICFG-PEDES, RSTPReid).

Both towers are fine-tuned as a dual encoder on (image, caption) pairs in P x K identity
batches. Two objectives:

- ``irra`` (IRRA-style): similarity distribution matching (SDM) at a fixed temperature plus
  the identity loss of a classifier shared by both modalities, and, with ``loss.irr_weight``,
  implicit relation reasoning (IRR): 15% of the caption's tokens are masked BERT-style and
  predicted by IRRA's cross-modal transformer: the masked caption's token states attend to
  the image's last feature map and embedding, then ``loss.irr_layers`` transformer layers
  (IRRA: 4) run over them before the vocabulary head;
- ``unipt`` (UniPT / LGUR-style): the identity loss plus a bidirectional ranking loss with the
  hardest negative of the batch and margin 0.2.

Evaluation: every test caption queries every test image by cosine similarity (R1/R5/R10,
mAP, mINP). The model is selected on the val split (CUHK-PEDES, RSTPReid); ICFG-PEDES has
none, so its last step is kept.
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
from personvl.tasks.finetuning import identity_batches, model_transform
from personvl.tasks.runner import (
    RANKING_METRICS, EvaluationTarget, Stage, Task, TaskData, Trained, task_config,
)
from personvl.training.optim import OptimConfig

OBJECTIVES = ("irra", "unipt")


@dataclass
class TextToImageData(TaskData):
    dataset: str = "cuhk-pedes"
    identities_per_batch: int = 16
    images_per_identity: int = 2
    transform: str = "clip"


@dataclass
class TextToImageLosses:
    objective: str = "irra"            # irra: SDM + ID | unipt: ID + ranking
    sdm_weight: float = 1.0
    temperature: float = 0.02          # SDM's fixed temperature (IRRA: 0.02)
    id_weight: float = 1.0
    label_smoothing: float = 0.0
    irr_weight: float = 0.0            # IRRA: 1.0 (masked tokens predicted with the image's help)
    irr_mask_ratio: float = 0.15
    irr_layers: int = 4                # transformer layers after IRR's cross-attention (IRRA: 4)
    ranking_weight: float = 1.0
    margin: float = 0.2
    text_lr_scale: float = 1.0
    head_lr_scale: float = 5.0         # the identity classifier learns faster (IRRA: x5)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UsageError(f"loss.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")


TextToImageConfig = task_config(
    "TextToImageConfig", __name__, output_dir="runs/t2i", data=TextToImageData, loss=TextToImageLosses,
    optim=lambda: OptimConfig("adam", lr=1e-5, weight_decay=4e-5, warmup_steps=5))


class TextToImageMethod(nn.Module):
    """Dual encoder + an identity classifier shared by images and captions."""

    def __init__(self, encoder, num_identities: int, losses: TextToImageLosses):
        super().__init__()
        self.encoder = encoder
        self.losses = losses
        self.classifier = nn.Linear(encoder.embed_dim, num_identities)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)
        self.irr_head = None
        if losses.objective == "irra" and losses.irr_weight:
            self.irr_head = _relation_head(encoder, losses.irr_layers)
            # Which ids IRR may mask, and which may replace a masked token: fixed by the tokenizer.
            tokenizer = encoder.tokenizer
            self._special_ids = torch.tensor(tokenizer.special_token_ids, dtype=torch.long)
            vocabulary = torch.arange(tokenizer.vocab_size)
            not_ordinary = torch.cat([self._special_ids, torch.tensor([tokenizer.mask_token_id])])
            self._replacement_ids = vocabulary[~torch.isin(vocabulary, not_ordinary)]

    def forward(self, batch: dict, progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        from personvl.models import TokenBatch
        from personvl.objectives import id_loss, ranking_loss, sdm_loss

        cfg = self.losses
        pids = batch["pid"]
        tokens = TokenBatch(batch["input_ids"], batch["attention_mask"])
        if self.irr_head is not None:
            features = self.encoder.image_features(batch["image"])
            image = features.embedding
        else:
            image = self.encoder.visual(batch["image"])
        text = self.encoder.text_features(tokens).embedding
        losses: dict[str, torch.Tensor] = {}
        total = image.new_zeros(())
        if cfg.id_weight:
            losses["id"] = (id_loss(self.classifier(image), pids, cfg.label_smoothing)
                            + id_loss(self.classifier(text), pids, cfg.label_smoothing)) / 2
            total = total + cfg.id_weight * losses["id"]
        if cfg.objective == "irra" and cfg.sdm_weight:
            losses["sdm"] = sdm_loss(image, text, pids, logit_scale=1.0 / cfg.temperature)
            total = total + cfg.sdm_weight * losses["sdm"]
        if self.irr_head is not None:
            losses["irr"] = self._relation_loss(tokens, features, step)
            total = total + cfg.irr_weight * losses["irr"]
        if cfg.objective == "unipt" and cfg.ranking_weight:
            losses["ranking"] = ranking_loss(image, text, pids, cfg.margin)
            total = total + cfg.ranking_weight * losses["ranking"]
        losses["loss"] = total
        return losses

    def _relation_loss(self, tokens, image_features, step: int) -> torch.Tensor:
        """IRR: predict BERT-style masked caption tokens from the masked caption and the image."""
        from personvl.models import TokenBatch
        from personvl.objectives import masked_token_loss, random_token_mask

        ids = tokens.input_ids.cpu()
        maskable = tokens.attention_mask.cpu().bool() & ~torch.isin(ids, self._special_ids.to(ids.dtype))
        # Seeded from the step, so a resumed run masks the same tokens as an uninterrupted one.
        generator = torch.Generator().manual_seed(1_000_003 + step)
        masked, labels = random_token_mask(ids, maskable, self.losses.irr_mask_ratio,
                                           self.encoder.tokenizer.mask_token_id, self._replacement_ids, generator)
        device = tokens.input_ids.device
        states = self.encoder.text_features(TokenBatch(masked.to(device), tokens.attention_mask)).tokens
        logits = self.irr_head(states, image_features.embedding, image_features.maps[-1],
                               attention_mask=tokens.attention_mask)
        return masked_token_loss(logits, labels.to(device))

    def parameter_groups(self) -> list[dict]:
        text = list(self.encoder.text.parameters())
        heads = list(self.classifier.parameters()) + (list(self.irr_head.parameters()) if self.irr_head else [])
        return [{"params": list(self.encoder.visual.parameters()), "name": "image"},
                {"params": text, "lr_scale": self.losses.text_lr_scale, "name": "text"},
                {"params": heads, "lr_scale": self.losses.head_lr_scale, "name": "heads"}]


def _relation_head(encoder, layers: int):
    """IRR's cross-modal transformer and vocabulary head (IRRA), at the text tower's width,
    reading the image's last feature map and embedding."""
    from personvl.models.heads import CrossModalTokenPredictor

    return CrossModalTokenPredictor(text_dim=encoder.text.width, vocab_size=encoder.tokenizer.vocab_size,
                                    image_dim=encoder.embed_dim, map_channels=encoder.visual.pyramid_channels[-1],
                                    layers=layers)


def _features(model, records, batch_size: int):
    from personvl.models.embedding import embed_images, embed_texts

    captions = [c for r in records for c in r.captions]
    if not captions:
        raise UsageError("text-to-image evaluation needs captions; these records have none")
    if any(r.pid is None for r in records):
        raise UsageError("text-to-image evaluation needs an identity on every record")
    caption_pids = np.array([r.pid for r in records for _ in r.captions], dtype=np.int64)
    image_pids = np.array([r.pid for r in records], dtype=np.int64)
    images = embed_images(model, [r.image_path for r in records], batch_size=batch_size, progress=False)
    texts = embed_texts(model, captions, batch_size=batch_size * 4)
    return captions, texts, caption_pids, images, image_pids


def retrieval_scores(model, records, batch_size: int = 64) -> dict[str, Any]:
    """Every caption of ``records`` against every image of ``records``."""
    from personvl.evaluation import retrieval_metrics

    _, texts, caption_pids, images, image_pids = _features(model, records, batch_size)
    return retrieval_metrics(texts, images, caption_pids, image_pids)


def plot_rankings(texts, images, captions, caption_pids, image_pids, records, out: Path) -> None:
    """The CMC curve and a grid of the images ranked first for the first captions."""
    from personvl.evaluation import plot_cmc, plot_retrieval_grid, ranked_gallery, retrieval_metrics

    plot_cmc(retrieval_metrics(texts, images, caption_pids, image_pids)["cmc"], out / "cmc.png",
             title="CMC (text-to-image)")
    shown = min(4, len(captions))
    ranked, correct = ranked_gallery(texts[:shown], images, caption_pids[:shown], image_pids, k=min(6, len(records)))
    plot_retrieval_grid(captions[:shown], [r.image_path for r in records], ranked, correct, out / "ranking.png")


class TextToImageTask(Task):
    """Captions query images: the dual encoder is fine-tuned on (image, caption) pairs and
    scored caption by caption over every image of the split."""

    name = "t2i"
    config_type = TextToImageConfig
    metric = "R1"
    reported = RANKING_METRICS
    identities = True

    def stages(self, config: TextToImageConfig, encoder, train, echo) -> list[Stage]:
        from personvl.data.datasets import PersonImageDataset
        from personvl.training.pretrain import CaptionTokenizer, collate_pretraining

        method = TextToImageMethod(encoder, max(r.pid for r in train) + 1, config.loss)
        dataset = PersonImageDataset(train, model_transform(encoder, config.data.transform, train=True),
                                     CaptionTokenizer(encoder.tokenizer), seed=config.trainer.seed)
        pids = [r.pid for r in train]
        return [Stage("", method, dataset,
                      lambda rank, world: identity_batches(pids, config.data, config.trainer.seed, rank, world),
                      config.optim, config.trainer.max_steps, collate=collate_pretraining,
                      describe=f"fine-tuning {config.model.name} for text-to-image retrieval ({config.loss.objective}) "
                               f"on {len(train)} {config.data.dataset} images for {config.trainer.max_steps} steps")]

    def trained(self, encoder, stages) -> Trained:
        return Trained(encoder)   # the identity classifier and IRR head serve training only

    def score(self, model: Trained, records, settings: EvaluationTarget, plots_dir: Path | None = None) -> dict[str, Any]:
        from personvl.evaluation import retrieval_metrics

        captions, texts, caption_pids, images, image_pids = _features(model.encoder, records, settings.batch_size)
        metrics = retrieval_metrics(texts, images, caption_pids, image_pids)
        metrics.update({"captions": len(captions), "images": len(records)})
        if plots_dir is not None:
            plot_rankings(texts, images, captions, caption_pids, image_pids, records, Path(plots_dir))
        return metrics


TASK = TextToImageTask()


def finetune(config: TextToImageConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Fine-tune a dual encoder for text-to-image retrieval; returns the run summary (also in
    ``output_dir/summary.json``; the test figures in ``output_dir/metrics.json``)."""
    from personvl.tasks.runner import run

    return run(TASK, config, overrides, resume=resume, echo=echo)


def evaluate(model, dataset: str, root: str | os.PathLike, *, split: str = "test", batch_size: int = 64,
             plots_dir: str | os.PathLike | None = None, dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Text-to-image metrics (R1/R5/R10/mAP/mINP, CMC) of ``model`` (an encoder, a saved folder
    or a registered name) on a split of ``dataset``: every caption queries every image.
    ``plots_dir``: write the CMC curve and a grid of ranked images per caption there."""
    from personvl.tasks.runner import evaluate_saved

    return evaluate_saved(TASK, model, dataset, root, split=split, settings=EvaluationTarget(batch_size=batch_size),
                          plots_dir=plots_dir, dataset_options=dataset_options)
