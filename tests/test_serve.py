import asyncio
import io
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from personvl.data.synth import generate_world, read_world_records
from personvl.errors import UsageError
from personvl.index import Encoder, build_index, open_index
from personvl.models import create_model, load_model, save_model
from personvl.serve import ServiceLimits, create_app
from personvl.serve.batching import ModelWorker, ServerBusy

LIMITS = ServiceLimits(max_upload_bytes=200_000, max_image_pixels=1_000_000, max_query_chars=200, max_k=20)
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-world") / "w"
    generate_world(out, identities=12, images_per_identity=2, cameras=3, seed=6, scene_identities=2,
                   progress=False, workers=1)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(1)
    return save_model(create_model("tiny-unipt-vitb16"), tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def index_dir(world, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-index") / "gallery.index"
    build_index(model_dir, world / "records.jsonl", out, progress=False)
    return out


@pytest.fixture(scope="module")
def client(index_dir):
    with TestClient(create_app(index_dir, limits=LIMITS)) as test_client:
        yield test_client


def jpeg_bytes(path: Path) -> bytes:
    return path.read_bytes()


def png_bytes(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def upload(data: bytes, name: str = "query.jpg", kind: str = "image/jpeg") -> dict:
    return {"file": (name, data, kind)}


def test_health_describes_the_index_and_its_limits(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["images"] == 24 and body["backend"] == "exact"
    assert body["model"] == "tiny"  # the model folder's name, not its path on the server
    assert body["attributes"] is False and body["in_flight"] == 0
    assert body["limits"] == {"max_upload_bytes": 200_000, "max_image_pixels": 1_000_000,
                              "max_query_chars": 200, "max_k": 20}


def test_the_page_and_its_assets_are_served_under_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="query-text"' in page.text and 'id="results"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/static/app.js")
    assert script.headers["content-type"].startswith("text/javascript") and "/search/text" in script.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../serve/app.py").status_code == 404


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search/text", "/search/image", "/search/similar", "/images/{image_id}", "/attributes",
            "/health"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_text_search_returns_what_the_library_returns(client, index_dir):
    text = "a woman with long hair in a red coat"
    response = client.post("/search/text", json={"text": text, "k": 5})
    assert response.status_code == 200
    body = response.json()
    expected = open_index(index_dir).search_text(text, k=5)
    assert body["query"] == text and [hit["id"] for hit in body["results"]] == [hit.id for hit in expected]
    first = body["results"][0]
    assert first["path"] == expected[0].relative_path and first["captions"] == expected[0].captions
    assert first["score"] == pytest.approx(expected[0].score, abs=1e-5)
    assert not first["path"].startswith("/")  # server paths stay on the server


@pytest.mark.parametrize("body, message", [
    ({"text": "x" * 201}, "text: String should have at most 200 characters"),
    ({"text": ""}, "text: String should have at least 1 character"),
    ({"text": "   "}, "the description is empty"),
    ({"text": "a man", "k": 21}, "k: Input should be less than or equal to 20"),
    ({"text": "a man", "k": 0}, "k: Input should be greater than or equal to 1"),
    ({"k": 3}, "text: Field required"),
])
def test_text_queries_out_of_bounds_are_refused_with_a_message(client, body, message):
    response = client.post("/search/text", json=body)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_oversized_json_bodies_are_refused_before_parsing(client):
    response = client.post("/search/text", content=json.dumps({"text": "a" * 100_000}),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than the limit of 65,536 bytes" in response.json()["detail"]


def test_image_search_finds_the_uploaded_gallery_image(client, world, index_dir):
    records = read_world_records(world)
    response = client.post("/search/image", files=upload(jpeg_bytes(world / records[5]["image"])), data={"k": "3"})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3 and results[0]["id"] == 5 and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert response.json()["query"] == "upload query.jpg"


def test_uploads_in_other_formats_are_accepted(client):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 128), (200, 30, 30)).save(buffer, "WEBP")
    assert client.post("/search/image", files=upload(buffer.getvalue(), "q.webp", "image/webp")).status_code == 200
    assert client.post("/search/image", files=upload(png_bytes((64, 128)), "q.png", "image/png")).status_code == 200


def test_image_uploads_that_break_a_limit_are_refused_with_a_message(client, world):
    cases = [
        (b"%PDF-1.7 a document", 415, "not an image in a supported format"),
        (png_bytes((1200, 1200), "L"), 413, "1200x1200 pixels is more than the limit of 1,000,000"),
        (jpeg_bytes(sorted((world / "images").glob("*.jpg"))[0])[:400], 400, "cannot decode the image"),
        (b"", 400, "the upload is empty"),
        (np.random.default_rng(0).bytes(300_000), 413, "larger than the limit of"),
    ]
    for data, status, message in cases:
        response = client.post("/search/image", files=upload(data))
        assert (response.status_code, message in response.json()["detail"]) == (status, True), response.json()
    missing = client.post("/search/image", data={"k": "3"})
    assert missing.status_code == 422 and "file: Field required" in missing.json()["detail"]


def test_a_body_streamed_without_length_is_cut_off_at_the_limit(client):
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        for _ in range(40):
            yield b"\xff" * 16_384  # 640 KiB of file in all, sent without a Content-Length
        yield b"\r\n--x--\r\n"

    response = client.post("/search/image", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "larger than the limit" in response.json()["detail"]


def test_a_declared_length_over_the_limit_is_refused_before_reading(client):
    response = client.post("/search/image", content=b"x", headers={"content-length": "999999999",
                                                                   "content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_search_by_an_indexed_image(client):
    response = client.post("/search/similar", json={"id": 9, "k": 4})
    results = response.json()["results"]
    assert response.status_code == 200 and results[0]["id"] == 9 and len(results) == 4
    assert response.json()["query"] == "image 9"
    missing = client.post("/search/similar", json={"id": 24})
    assert missing.status_code == 404 and missing.json()["detail"] == "no image with id 24"
    assert client.post("/search/similar", json={"id": -1}).status_code == 422


def test_thumbnails_are_served_by_id(client, world):
    response = client.get("/images/3")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(response.content))
    original = Image.open(sorted((world / "images").glob("*.jpg"))[3])
    assert max(thumbnail.size) <= 256 and thumbnail.size[1] / thumbnail.size[0] == pytest.approx(
        original.size[1] / original.size[0], rel=0.05)
    assert client.get("/images/3").content == response.content  # from the cache, same bytes
    assert client.get("/images/24").status_code == 404
    assert client.get("/images/-1").status_code == 404
    assert client.get("/images/abc").status_code == 422
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/images/%2Fetc%2Fpasswd").status_code in (404, 422)


def test_thumbnails_never_come_from_outside_the_gallery_root(world, model_dir, tmp_path):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    images = sorted((world / "images").glob("*.jpg"))
    for image in images[:3]:
        shutil.copy(image, gallery / image.name)
    secret = tmp_path / "secret.jpg"  # a real image beside, not inside, the gallery
    shutil.copy(images[4], secret)
    out = tmp_path / "idx"
    build_index(model_dir, gallery, out, progress=False)
    (gallery / images[1].name).unlink()
    (gallery / images[1].name).symlink_to(secret)  # a link swapped in after indexing
    metadata = out / "chunks" / "000000.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    rows[2]["path"] = "../secret.jpg"  # an index file edited to point outside
    metadata.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with TestClient(create_app(out)) as client:
        assert client.get("/images/0").status_code == 200
        for image_id in (1, 2):
            response = client.get(f"/images/{image_id}")
            assert response.status_code == 404 and response.json()["detail"] == f"image {image_id} is not available"


class WithAttributeHead(torch.nn.Module):
    """The tiny encoder plus a linear attribute head on its image embedding."""

    names = ["female", "backpack", "hat"]

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.image_transform = encoder.image_transform
        self.head = torch.nn.Linear(encoder.embed_dim, len(self.names))

    def encode_image(self, images):
        return self.encoder.encode_image(images)

    def encode_text(self, texts):
        return self.encoder.encode_text(texts)

    def predict_attributes(self, images):
        probabilities = torch.sigmoid(self.head(self.encode_image(images)))
        return [dict(zip(self.names, row.tolist())) for row in probabilities]


def test_attributes_need_a_model_with_an_attribute_head(client, index_dir, model_dir, world):
    image = jpeg_bytes(sorted((world / "images").glob("*.jpg"))[0])
    response = client.post("/attributes", files=upload(image))
    assert response.status_code == 501 and "has no attribute head" in response.json()["detail"]

    index = open_index(index_dir, encoder=Encoder(WithAttributeHead(load_model(model_dir)).eval()))
    with TestClient(create_app(index, limits=LIMITS)) as with_head:
        assert with_head.get("/health").json()["attributes"] is True
        response = with_head.post("/attributes", files=upload(image))
        assert response.status_code == 200
        attributes = response.json()["attributes"]
        assert set(attributes) == set(WithAttributeHead.names) and all(0 < p < 1 for p in attributes.values())
        refused = with_head.post("/attributes", files=upload(b"GIF89a but not really"))
        assert refused.status_code == 415


def test_a_token_is_required_on_every_endpoint_when_set(index_dir, world):
    app = create_app(index_dir, token=TOKEN, limits=LIMITS)
    image = jpeg_bytes(sorted((world / "images").glob("*.jpg"))[0])
    requests = [("GET", "/", {}), ("GET", "/static/app.js", {}), ("GET", "/static/style.css", {}),
                ("GET", "/health", {}), ("GET", "/docs", {}), ("GET", "/openapi.json", {}),
                ("GET", "/images/0", {}), ("POST", "/search/text", {"json": {"text": "a man"}}),
                ("POST", "/search/similar", {"json": {"id": 0}}), ("POST", "/search/image", {"files": upload(image)}),
                ("POST", "/attributes", {"files": upload(image)})]
    routed = {route.path.replace("{image_id}", "0") for route in app.routes} - {"/docs/oauth2-redirect", "/redoc"}
    assert routed <= {path for _, path, _ in requests}  # every endpoint is tried
    with TestClient(app) as client:
        for method, path, kwargs in requests:
            refused = client.request(method, path, **kwargs)
            assert refused.status_code == 401 and "API token is required" in refused.json()["detail"], path
            wrong = client.request(method, path, headers={"authorization": "Bearer nope"}, **kwargs)
            assert wrong.status_code == 401
            allowed = client.request(method, path, headers={"authorization": f"Bearer {TOKEN}"}, **kwargs)
            assert allowed.status_code in (200, 501), (path, allowed.text)
        assert client.get("/health", headers={"x-api-token": TOKEN}).status_code == 200
        assert client.get(f"/health?token={TOKEN}").status_code == 401  # only the page takes it in the address

        login = client.get(f"/?token={TOKEN}", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=Strict" in login.headers["set-cookie"]
        assert client.post("/search/text", json={"text": "a man"}).status_code == 200  # the cookie now
    with pytest.raises(UsageError, match="may contain only"):
        create_app(index_dir, token="semi;colon")


def test_requests_beyond_the_in_flight_bound_get_503(index_dir, model_dir):
    release = threading.Event()

    class SlowText(Encoder):
        def encode_texts(self, texts):
            release.wait(10)
            return super().encode_texts(texts)

    release.set()  # the model check at open must not wait
    index = open_index(index_dir, encoder=SlowText(load_model(model_dir)))
    release.clear()
    app = create_app(index, limits=ServiceLimits(max_in_flight=1))
    with TestClient(app) as client:
        first = {}
        thread = threading.Thread(target=lambda: first.update(response=client.post("/search/text", json={"text": "a"})))
        thread.start()
        deadline = time.monotonic() + 10
        while app.state.worker.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = client.post("/search/text", json={"text": "b"})
        assert busy.status_code == 503 and "busy" in busy.json()["detail"] and busy.headers["retry-after"] == "1"
        assert client.get("/health").status_code == 200  # the rest of the service still answers
        release.set()
        thread.join(10)
        assert first["response"].status_code == 200
        assert client.post("/search/text", json={"text": "c"}).status_code == 200


def test_waiting_requests_are_answered_in_batches():
    started, release = threading.Event(), threading.Event()
    batches = []

    def double(items):
        batches.append(list(items))
        started.set()
        release.wait(5)
        return [2 * item for item in items]

    async def scenario():
        worker = ModelWorker({"double": double}, max_batch=4, max_in_flight=8)

        async def one(value):
            with worker.admit():
                return await worker.submit("double", value)

        first = asyncio.create_task(one(0))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        rest = [asyncio.create_task(one(value)) for value in range(1, 7)]
        await asyncio.sleep(0.05)
        assert worker.in_flight == 7
        with worker.admit():  # the eighth and last place
            with pytest.raises(ServerBusy):
                with worker.admit():
                    pass
        release.set()
        results = await asyncio.gather(first, *rest)
        await worker.stop()
        return results, worker

    results, worker = asyncio.run(scenario())
    assert results == [0, 2, 4, 6, 8, 10, 12]
    assert batches == [[0], [1, 2, 3, 4], [5, 6]] and worker.batches_run == 3 and worker.in_flight == 0


def test_the_access_log_never_shows_the_token():
    from personvl.serve.app import _RedactToken

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", f"/?token={TOKEN}&x=1", "1.1", 303), None)
    assert _RedactToken().filter(record) and TOKEN not in record.getMessage()
    assert '"GET /?token=<redacted>&x=1 HTTP/1.1" 303' in record.getMessage()
