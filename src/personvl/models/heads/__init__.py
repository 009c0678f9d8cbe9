"""Heads on top of the encoders: colorization decoder, masked-token predictor, BNNeck."""

from personvl.models.heads.colorization import ColorizationDecoder
from personvl.models.heads.masked_tokens import MaskedTokenPredictor

__all__ = ["ColorizationDecoder", "MaskedTokenPredictor"]
