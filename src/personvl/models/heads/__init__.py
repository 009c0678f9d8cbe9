"""Heads on top of the encoders: colorization decoder, masked-token predictor, BNNeck,
segmentation (human parsing)."""

from personvl.models.heads.colorization import ColorizationDecoder
from personvl.models.heads.masked_tokens import CrossModalTokenPredictor, MaskedTokenPredictor
from personvl.models.heads.segmentation import SegmentationHead

__all__ = ["ColorizationDecoder", "CrossModalTokenPredictor", "MaskedTokenPredictor", "SegmentationHead"]
