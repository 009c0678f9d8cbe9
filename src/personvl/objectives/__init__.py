"""Training objectives as pure functions of tensors: each takes embeddings, logits or targets
and returns a scalar loss, with no model or optimiser state inside."""

from personvl.objectives.classification import (
    attribute_bce_loss, batch_hard_triplet_loss, id_loss, pixel_cross_entropy, positive_ratio_weights,
)
from personvl.objectives.colorization import colorization_loss, to_grayscale
from personvl.objectives.contrastive import cmpm_loss, identity_match_matrix, infonce_loss, ranking_loss, sdm_loss
from personvl.objectives.distributed import distributed_world, gather_batch
from personvl.objectives.masking import (
    masked_token_loss, masking_ratio_schedule, random_token_mask, whole_word_mask,
)
from personvl.objectives.momentum import FeatureQueue, momentum_contrast_loss, momentum_update

__all__ = [
    "FeatureQueue", "attribute_bce_loss", "batch_hard_triplet_loss", "cmpm_loss", "colorization_loss",
    "distributed_world", "gather_batch",
    "id_loss", "identity_match_matrix", "infonce_loss", "masked_token_loss", "masking_ratio_schedule",
    "momentum_contrast_loss", "momentum_update", "pixel_cross_entropy", "positive_ratio_weights", "random_token_mask",
    "ranking_loss", "sdm_loss",
    "to_grayscale", "whole_word_mask",
]
