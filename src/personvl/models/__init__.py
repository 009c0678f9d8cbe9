"""Person image and text encoders: the model zoo, its weights, and embedding with it.

>>> from personvl.models import create_model
>>> model = create_model("tiny-plip-rn50")
>>> model.encode_text(["a woman in a red coat"]).shape
torch.Size([1, 32])
"""

from personvl.models.build import create_model, open_model
from personvl.models.checkpoints import LoadReport, WeightsMismatchError, load_model, load_weights, save_model
from personvl.models.config import ModelConfig, PreprocessConfig, TokenizerConfig
from personvl.models.embedding import embed_image_folder, embed_images, embed_texts, save_embeddings
from personvl.models.encoder import ImageFeatures, PersonEncoder, TextFeatures
from personvl.models.export import OnnxExport, export_onnx
from personvl.models.image import resize_position_embedding
from personvl.models.registry import ModelSummary, describe_model, list_models, model_config, model_entry
from personvl.models.tokenization import TokenBatch, load_tokenizer
from personvl.models.transforms import ImageTransform

__all__ = [
    "ImageFeatures", "ImageTransform", "LoadReport", "ModelConfig", "ModelSummary", "OnnxExport", "PersonEncoder",
    "PreprocessConfig", "TextFeatures", "TokenBatch", "TokenizerConfig", "WeightsMismatchError", "create_model",
    "describe_model", "embed_image_folder", "embed_images", "embed_texts", "export_onnx", "list_models", "load_model",
    "load_tokenizer", "load_weights", "model_config", "model_entry", "open_model", "resize_position_embedding",
    "save_embeddings", "save_model",
]
