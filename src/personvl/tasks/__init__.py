"""Using encoders on person tasks without fine-tuning: zero-shot retrieval and re-ID, linear
probes."""

from personvl.tasks.zero_shot import (
    TextToImageResult, evaluate_reid, evaluate_text_to_image, linear_probe_attributes,
)

__all__ = ["TextToImageResult", "evaluate_reid", "evaluate_text_to_image", "linear_probe_attributes"]
