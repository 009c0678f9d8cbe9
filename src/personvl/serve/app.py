"""The HTTP service over an index: search by text or image, thumbnails, attributes, a web page.

Requests never name files: images are addressed by their id in the index, uploads are decoded
from memory, and the page's assets are read from the package once at start-up.
"""

# No "from __future__ import annotations": FastAPI resolves the request models defined inside
# create_app from the live annotations.
import io
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from personvl import __version__
from personvl.errors import PersonvlError, UsageError
from personvl.index.encoder import short_reference
from personvl.index.images import ImageRejected, open_image
from personvl.index.search import GalleryIndex, open_index
from personvl.serve.batching import ModelWorker, ServerBusy
from personvl.serve.limits import BodySizeLimit, ServiceLimits, TokenAuth

UPLOAD_PATHS = ("/search/image", "/attributes")
# Characters that survive a cookie and a header unquoted.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/=-]+")
STATIC_ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
REJECTION_STATUS = {"not_an_image": 415, "format": 415, "too_many_pixels": 413, "corrupt": 400}


class Hit(BaseModel):
    id: int = Field(description="the image's id in the index; GET /images/{id} returns its thumbnail")
    score: float = Field(description="cosine similarity to the query")
    path: str = Field(description="the image's path under the gallery root")
    pid: int | None = None
    camid: int | None = None
    captions: list[str] = []


class SearchResponse(BaseModel):
    query: str
    results: list[Hit]
    took_ms: float


class Health(BaseModel):
    status: str
    version: str
    images: int
    dim: int
    model: str
    backend: str
    params: dict
    recall_at_10: float | None
    attributes: bool = Field(description="whether POST /attributes is available")
    in_flight: int
    limits: dict


class AttributesResponse(BaseModel):
    attributes: dict[str, float] = Field(description="attribute name -> predicted probability")


def _query_models(limits: ServiceLimits):
    class TextQuery(BaseModel):
        text: str = Field(min_length=1, max_length=limits.max_query_chars,
                          description="a description of the person")
        k: int = Field(10, ge=1, le=limits.max_k, description="how many results")

    class SimilarQuery(BaseModel):
        id: int = Field(ge=0, description="id of an indexed image (from a previous result)")
        k: int = Field(10, ge=1, le=limits.max_k)

    return TextQuery, SimilarQuery


class _ThumbnailCache:
    """The last few hundred thumbnails, so a page of results is served without decoding."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[int, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: int) -> bytes | None:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        return None

    def put(self, key: int, value: bytes) -> None:
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)


def _read_assets() -> dict[str, bytes]:
    static = resources.files("personvl.serve").joinpath("static")
    return {name: static.joinpath(name).read_bytes() for name in STATIC_ASSETS}


def create_app(index: GalleryIndex | str | os.PathLike, token: str | None = None,
               limits: ServiceLimits | None = None) -> FastAPI:
    """The FastAPI application serving ``index`` (an open index or its directory).

    With ``token`` set, every endpoint (the page, the API, the docs) requires it.
    """
    limits = limits or ServiceLimits()
    if token is not None and not TOKEN_PATTERN.fullmatch(token):
        raise UsageError("the API token may contain only letters, digits and - . _ ~ + / =")
    if not isinstance(index, GalleryIndex):
        index = open_index(index)
    encoder = index.encoder  # loaded now: a broken model reference fails at start, not on a query
    assets = _read_assets()
    thumbnails = _ThumbnailCache(limits.thumbnail_cache)
    decode_slots = threading.BoundedSemaphore(limits.decode_threads)
    worker = ModelWorker({
        "text": lambda texts: list(encoder.encode_texts(texts)),
        "image": lambda tensors: list(encoder.encode_tensors(tensors)),
        "attributes": encoder.predict_attributes,
    }, max_batch=limits.max_batch, max_in_flight=limits.max_in_flight)
    TextQuery, SimilarQuery = _query_models(limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await worker.stop()

    app = FastAPI(title="personvl search", version=__version__, lifespan=lifespan,
                  description="Search an indexed gallery of person images by description or by image.")
    app.state.index, app.state.worker, app.state.limits = index, worker, limits

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'][1:]) or error['loc'][0]}: {error['msg']}"
                             for error in exc.errors())
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(ServerBusy)
    async def busy(request: Request, exc: ServerBusy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"retry-after": "1"})

    @app.exception_handler(ImageRejected)
    async def rejected_image(request: Request, exc: ImageRejected):
        return JSONResponse({"detail": str(exc)}, status_code=REJECTION_STATUS.get(exc.reason, 400))

    def page_asset(name: str):
        def serve() -> Response:
            return Response(assets[name], media_type=STATIC_ASSETS[name], headers=PAGE_HEADERS)
        return serve

    app.get("/", include_in_schema=False)(page_asset("index.html"))
    app.get("/static/app.js", include_in_schema=False)(page_asset("app.js"))
    app.get("/static/style.css", include_in_schema=False)(page_asset("style.css"))

    @app.get("/health", response_model=Health, summary="Index size, model, backend and limits")
    async def health() -> dict:
        # The model's short name only: the service does not disclose server paths.
        return {"status": "ok", "version": __version__, **index.describe(),
                "model": short_reference(index.model_reference),
                "attributes": encoder.has_attribute_head, "in_flight": worker.in_flight,
                "limits": {"max_upload_bytes": limits.max_upload_bytes,
                           "max_image_pixels": limits.max_image_pixels,
                           "max_query_chars": limits.max_query_chars, "max_k": limits.max_k}}

    def results(query: str, hits, started: float) -> dict:
        return {"query": query, "results": [hit.to_dict() for hit in hits],
                "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def search(vector: np.ndarray, k: int):
        return (await run_in_threadpool(index.search_vectors, vector[None], k))[0]

    @app.post("/search/text", response_model=SearchResponse, summary="Search by a description")
    async def search_text(query: TextQuery) -> dict:
        started = time.perf_counter()
        if not query.text.strip():
            raise HTTPException(422, "text: the description is empty")
        with worker.admit():
            vector = await worker.submit("text", query.text)
            return results(query.text, await search(vector, query.k), started)

    async def read_upload(upload: UploadFile):
        """The upload decoded and preprocessed for the model; limits checked before decoding."""
        data = await upload.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"the upload is larger than the limit of {limits.max_upload_bytes:,} bytes")
        if not data:
            raise HTTPException(400, "the upload is empty")

        def decode():
            with decode_slots:  # full-size decoded images are the largest buffers; few at once
                return encoder.image_tensor(open_image(data, limits.max_image_pixels))

        return await run_in_threadpool(decode)

    @app.post("/search/image", response_model=SearchResponse, summary="Search by an uploaded image")
    async def search_image(file: Annotated[UploadFile, File(description="a JPEG, PNG, WebP, BMP or GIF image")],
                           k: Annotated[int, Form(ge=1, le=limits.max_k)] = 10) -> dict:
        started = time.perf_counter()
        with worker.admit():
            tensor = await read_upload(file)
            vector = await worker.submit("image", tensor)
            return results(f"upload {(file.filename or '')[:100]}".strip(), await search(vector, k), started)

    @app.post("/search/similar", response_model=SearchResponse, summary="Search by an indexed image")
    async def search_similar(query: SimilarQuery) -> dict:
        started = time.perf_counter()
        if query.id >= index.size:
            raise HTTPException(404, f"no image with id {query.id}")
        with worker.admit():  # an exact search of a large gallery is work worth bounding too
            return results(f"image {query.id}", await search(index.vector(query.id), query.k), started)

    @app.get("/images/{image_id}", summary="Thumbnail of an indexed image (JPEG)",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown id or missing file"}})
    async def thumbnail(image_id: int) -> Response:
        if not 0 <= image_id < index.size:
            raise HTTPException(404, f"no image with id {image_id}")
        data = thumbnails.get(image_id)
        if data is None:
            with worker.admit():
                try:
                    data = await run_in_threadpool(_make_thumbnail, index, image_id, limits, decode_slots)
                except (PersonvlError, OSError):
                    raise HTTPException(404, f"image {image_id} is not available") from None
            thumbnails.put(image_id, data)
        return Response(data, media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"})

    @app.post("/attributes", response_model=AttributesResponse,
              summary="Predicted attributes of an uploaded image",
              responses={501: {"description": "the index's model has no attribute head"}})
    async def attributes(file: Annotated[UploadFile, File(description="a person image")]) -> dict:
        if not encoder.has_attribute_head:
            raise HTTPException(501, "the model of this index has no attribute head, so it cannot "
                                     "predict attributes; index with a model that has one")
        with worker.admit():
            tensor = await read_upload(file)
            predicted = await worker.submit("attributes", tensor)
            return {"attributes": {name: float(value) for name, value in predicted.items()}}

    def body_limit(path: str) -> int:
        # Multipart framing adds a few hundred bytes around the file itself.
        return limits.max_upload_bytes + 16 * 1024 if path in UPLOAD_PATHS else limits.max_json_bytes

    app.add_middleware(BodySizeLimit, limit_for_path=body_limit)
    if token is not None:
        app.add_middleware(TokenAuth, token=token)  # outermost: nothing runs before the check
    return app


def _make_thumbnail(index: GalleryIndex, image_id: int, limits: ServiceLimits,
                    decode_slots: threading.BoundedSemaphore) -> bytes:
    with decode_slots:
        image = open_image(index.image_path(image_id), limits.max_image_pixels)
    image.thumbnail((limits.thumbnail_pixels, limits.thumbnail_pixels))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class _RedactToken(logging.Filter):
    """Keeps the token of a ``/?token=`` visit out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], re.sub(r"token=[^&]*", "token=<redacted>", record.args[2]),
                           *record.args[3:])
        return True


def run_server(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
               token: str | None = None, limits: ServiceLimits | None = None, log_level: str = "info") -> None:
    """Serve an index with uvicorn until interrupted. ``token`` defaults to the environment
    variable ``PERSONVL_API_TOKEN``."""
    import uvicorn

    import faiss

    token = token if token is not None else (os.environ.get("PERSONVL_API_TOKEN") or None)
    limits = limits or ServiceLimits()
    # Requests search concurrently, one query each: a thread per search keeps OpenMP threads of
    # different requests from contending for the same cores (several times slower when they do).
    faiss.omp_set_num_threads(1)
    app = create_app(index_dir, token=token, limits=limits)
    logging.getLogger("uvicorn.access").addFilter(_RedactToken())
    # Connections beyond this are answered 503 by uvicorn before any request is parsed.
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=4 * limits.max_in_flight,
                timeout_keep_alive=5)
