"""Search a gallery: build a faiss index of image embeddings and query it by text or image.

```
report = build_index("runs/model", "photos/", "photos.index")     # incremental, resumable
index = open_index("photos.index")
for hit in index.search_text("a man in a blue jacket with a backpack", k=10):
    print(hit.score, hit.path, hit.pid, hit.captions)
```
"""

from personvl.index.backends import BACKENDS, BackendConfig, build_faiss_index, exact_neighbours, recall_at_k
from personvl.index.build import BuildReport, build_index
from personvl.index.encoder import Encoder, load_referenced_model, model_reference
from personvl.index.images import ImageRejected, open_image
from personvl.index.search import GalleryIndex, SearchHit, open_index, search_index
from personvl.index.sources import GalleryItem, GallerySource, resolve_source

__all__ = [
    "BACKENDS", "BackendConfig", "BuildReport", "Encoder", "GalleryIndex", "GalleryItem", "GallerySource",
    "ImageRejected", "SearchHit", "build_faiss_index", "build_index", "exact_neighbours", "load_referenced_model",
    "model_reference", "open_image", "open_index", "recall_at_k", "resolve_source", "search_index",
]
