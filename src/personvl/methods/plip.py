"""PLIP: identity-aware vision-language contrast (IVLC) + text-guided colorization (TIC) +
image-guided attribute prediction (IAP); L = L_ivlc + 0.02 L_tic + 0.1 L_iap."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from personvl.errors import UsageError
from personvl.methods.base import attention_heads, contrast_identities, text_and_other_groups
from personvl.methods.text_masking import AttributeMatcher, colour_and_part_words, wordpiece_words
from personvl.models import PersonEncoder, TokenBatch
from personvl.models.heads import ColorizationDecoder, MaskedTokenPredictor
from personvl.objectives import (
    cmpm_loss, colorization_loss, infonce_loss, masked_token_loss, masking_ratio_schedule, to_grayscale, whole_word_mask,
)
from personvl.objectives.masking import IGNORE_INDEX

IAP_UNITS = ("phrases", "words")


@dataclass
class PLIPConfig:
    ivlc_weight: float = 1.0
    # The paper's IVLC is identity-aware CMPM (no temperature). "infonce" swaps in the
    # identity-aware InfoNCE with a learnable temperature: it escapes the near-uniform start of
    # randomly initialised encoders far sooner, which small CPU runs need.
    ivlc_loss: str = "cmpm"
    # Where the infonce form's learnable scale starts (CLIP's 1/0.07).
    infonce_scale_init: float = 1 / 0.07
    tic_weight: float = 0.02
    iap_weight: float = 0.1
    mask_ratio_start: float = 0.2
    mask_ratio_end: float = 0.8
    # The captioning vocabulary (a YAML file; null: personvl's) whose item and property words
    # find the attribute phrases of captions whose record lists none, and whose synonyms match
    # a record's phrases in other words.
    iap_vocabulary: str | None = None
    # What IAP masks as one unit: "phrases" (PLIP's attribute phrases, above) or "words": each
    # colour or clothing-part word of a fixed list on its own, the quickstart's recipe, kept as
    # it was tuned (docs/pretraining.md gives both on the quickstart's budget).
    iap_units: str = "phrases"
    decoder_width: int = 1024          # channels of the fused colorization map
    # Colorize only the first N images of each batch (None: all of them, as the paper does).
    # TIC runs the image tower a second time, on the grey images; on a CPU a quarter of the
    # batch keeps the objective for about a quarter less time per step on the tiny recipe.
    tic_images: int | None = None
    # Predict the masked attribute words of the first N captions only (None: all of them). IAP
    # runs the text tower a second time, on the masked captions: the costliest objective of a
    # tiny step, nearly half of it on a CPU.
    iap_captions: int | None = None
    text_lr_scale: float = 0.1         # BERT learns at a tenth of the base rate
    seed: int = 0                      # masking draws, per step


class PLIPMethod(nn.Module):
    def __init__(self, encoder: PersonEncoder, config: PLIPConfig):
        super().__init__()
        if config.tic_images is not None and config.tic_images < 1:
            raise UsageError(f"plip.tic_images must be a positive number of images or null, got {config.tic_images}")
        if config.iap_captions is not None and config.iap_captions < 1:
            raise UsageError(f"plip.iap_captions must be a positive number of captions or null, got {config.iap_captions}")
        if config.iap_units not in IAP_UNITS:
            raise UsageError(f"plip.iap_units must be one of {', '.join(IAP_UNITS)}, got {config.iap_units!r}")
        if config.ivlc_loss not in ("cmpm", "infonce"):
            raise UsageError(f"plip.ivlc_loss must be cmpm or infonce, got {config.ivlc_loss!r}")
        self.encoder = encoder
        self.config = config
        if config.ivlc_loss == "infonce":
            if config.infonce_scale_init <= 0:
                raise UsageError(f"plip.infonce_scale_init must be positive, got {config.infonce_scale_init}")
            self.logit_scale = nn.Parameter(torch.tensor(math.log(config.infonce_scale_init)))
        channels = list(encoder.visual.pyramid_channels)
        mean, std = encoder.config.preprocess.mean, encoder.config.preprocess.std
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)
        self.decoder = ColorizationDecoder(channels, text_dim=encoder.embed_dim, width=config.decoder_width,
                                           gate_hidden=max(16, config.decoder_width // 2))
        tokenizer = encoder.tokenizer
        self.iap_head = MaskedTokenPredictor(text_dim=encoder.text.width, vocab_size=tokenizer.vocab_size,
                                             image_dim=encoder.embed_dim, map_channels=channels[-1],
                                             heads=attention_heads(encoder.text.width))
        self.attribute_matcher = None
        if config.iap_weight and config.iap_units == "phrases":
            from personvl.captioning.vocabulary import load_vocabulary

            self.attribute_matcher = AttributeMatcher.from_vocabulary(load_vocabulary(config.iap_vocabulary))

    def forward(self, batch: dict, progress: float, step: int = 0) -> dict[str, torch.Tensor]:
        cfg = self.config
        images, pids = batch["image"], contrast_identities(batch["pid"])
        tokens = TokenBatch(batch["input_ids"], batch["attention_mask"])
        image = self.encoder.image_features(images)
        text = self.encoder.text_features(tokens)
        losses: dict[str, torch.Tensor] = {}
        total = images.new_zeros(())
        if cfg.ivlc_weight:
            if cfg.ivlc_loss == "cmpm":
                losses["ivlc"] = cmpm_loss(image.embedding, text.embedding, pids)
            else:
                scale = self.logit_scale.exp().clamp(max=100.0)
                losses["ivlc"] = infonce_loss(image.embedding, text.embedding, scale, pids)
            total = total + cfg.ivlc_weight * losses["ivlc"]
        if cfg.tic_weight:
            coloured, guide = images[:cfg.tic_images], text.embedding[:cfg.tic_images]
            gray = to_grayscale(coloured, self.mean, self.std)
            decoded = self.decoder(self.encoder.image_features(gray).maps, guide)
            losses["tic"] = colorization_loss(decoded, coloured)
            total = total + cfg.tic_weight * losses["tic"]
        if cfg.iap_weight:
            ratio = masking_ratio_schedule(progress, cfg.mask_ratio_start, cfg.mask_ratio_end)
            hf = self.encoder.tokenizer.hf
            used = slice(0, cfg.iap_captions)
            input_ids, attention_mask = tokens.input_ids[used], tokens.attention_mask[used]
            image_embedding, image_map = image.embedding[used], image.maps[-1][used]
            word_ids, words = wordpiece_words(hf, input_ids)
            if cfg.iap_units == "words":
                spans = [colour_and_part_words(w) for w in words]
            else:
                phrases = batch.get("attribute_phrases") or [()] * len(images)
                spans = [self.attribute_matcher.spans(w, p) for w, p in zip(words, phrases[used])]
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            masked_ids, labels = whole_word_mask(input_ids.cpu(), word_ids, ratio, hf.mask_token_id,
                                                 generator, candidate_words=spans)
            masked = self.encoder.text_features(TokenBatch(masked_ids.to(images.device), attention_mask))
            labels = labels.to(images.device)
            # The head predicts each position from its own state and its image alone, so only the
            # masked positions are run: one query per masked word piece, with its caption's image.
            rows, columns = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
            if len(rows):
                logits = self.iap_head(masked.tokens[rows, columns].unsqueeze(1), image_embedding[rows],
                                       image_map[rows])
                labels = labels[rows, columns].unsqueeze(1)
            else:   # no word masked: a zero loss that still reaches every head parameter
                logits = self.iap_head(masked.tokens[:, :1], image_embedding, image_map)
                labels = labels[:, :1]
            losses["iap"] = masked_token_loss(logits, labels)
            losses["mask_ratio"] = torch.tensor(ratio)
            total = total + cfg.iap_weight * losses["iap"]
        losses["loss"] = total
        return losses

    def parameter_groups(self) -> list[dict]:
        return text_and_other_groups(self, self.encoder.text, self.config.text_lr_scale)
