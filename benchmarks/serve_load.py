"""Load on the search service: bounded concurrent requests against a local server.

Run: python benchmarks/serve_load.py [--identities 100] [--requests 1500] [--concurrency 1 8 32]
Builds a synthetic gallery and an index with a tiny model, starts ``personvl serve`` in a
subprocess on 127.0.0.1, and for each concurrency level sends a mix of text searches (60%),
image uploads (20%) and thumbnails (20%), each client sending its next request as soon as the
last is answered (no back-off, the worst case). Prints latency percentiles and throughput per
level, how many requests the server turned away with 503 (its in-flight bound), and the
server's resident memory before, at the peak of, and after the load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DESCRIPTIONS = [
    "a woman in a red coat with a black backpack", "a man wearing a blue jacket and grey trousers",
    "a person in a white t-shirt, black shorts and white shoes", "a girl with long black hair in a pink dress",
    "a young man with a hat carrying a shoulder bag", "someone in a green sweater holding an umbrella",
]


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart(field: str, name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "personvlbenchmark"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        headers = {"content-type": content_type} if content_type else {}
        started = time.perf_counter()
        # A kept-alive connection the server closed while idle fails once; a fresh one must not.
        for fresh in (getattr(self.local, "connection", None) is None, True):
            if fresh:
                self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.local.connection.request(method, path, body=body, headers=headers)
                response = self.local.connection.getresponse()
                response.read()
                return response.status, (time.perf_counter() - started) * 1000
            except (OSError, http.client.HTTPException):
                self.local.connection.close()
                if fresh:
                    break
        self.local.connection = None
        return 0, (time.perf_counter() - started) * 1000  # refused or dropped


def run_level(client: Client, concurrency: int, requests: int, images: list[bytes], gallery_size: int,
              seed: int) -> dict:
    rng = random.Random(seed)
    plan = []
    for _ in range(requests):
        draw = rng.random()
        if draw < 0.6:
            plan.append(("text", "POST", "/search/text",
                         json.dumps({"text": rng.choice(DESCRIPTIONS), "k": 10}).encode(), "application/json"))
        elif draw < 0.8:
            body, content_type = multipart("file", "query.jpg", rng.choice(images))
            plan.append(("image", "POST", "/search/image", body, content_type))
        else:
            plan.append(("thumbnail", "GET", f"/images/{rng.randrange(gallery_size)}", None, None))
    results = defaultdict(list)
    statuses = Counter()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for kind, (status, ms) in zip((p[0] for p in plan),
                                      pool.map(lambda p: client.request(*p[1:]), plan)):
            statuses[status] += 1
            if status == 200:
                results[kind].append(ms)
                results["all"].append(ms)
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "elapsed": elapsed, "statuses": statuses, "latencies": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=100, help="gallery identities (4 images each)")
    parser.add_argument("--requests", type=int, default=1500, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent clients per level")
    parser.add_argument("--max-in-flight", type=int, default=16, help="the server's in-flight bound")
    parser.add_argument("--model", default="tiny-unipt-vitb16")
    args = parser.parse_args()

    import torch

    from personvl.data.synth import generate_world
    from personvl.index import build_index
    from personvl.models import create_model, save_model

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_world(world, identities=args.identities, images_per_identity=4, cameras=4, scene_identities=0,
                       progress=False)
        torch.manual_seed(0)
        model = save_model(create_model(args.model), Path(tmp) / "model")
        report = build_index(model, world / "records.jsonl", Path(tmp) / "index", progress=False)
        images = [path.read_bytes() for path in sorted((world / "images").glob("*.jpg"))[:50]]
        print(f"gallery: {report.total} images, model {args.model}, server in-flight bound {args.max_in_flight}")

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "personvl", "serve", str(Path(tmp) / "index"), "--port", str(port),
             "--max-in-flight", str(args.max_in_flight)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = Client(port)
        try:
            deadline = time.monotonic() + 60
            while client.request("GET", "/health")[0] != 200:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
            run_level(client, 4, 100, images, report.total, seed=0)  # warm-up: thumbnails, code paths
            rss_before = resident_mib(server.pid)
            peak = [rss_before]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.05):
                    peak[0] = max(peak[0], resident_mib(server.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            levels = [run_level(client, concurrency, args.requests, images, report.total, seed=level + 1)
                      for level, concurrency in enumerate(args.concurrency)]
            sampling.set()
            sampler.join()
            health = client.request("GET", "/health")[0]
            rss_after = resident_mib(server.pid)
        finally:
            server.terminate()
            server.wait(10)

    print(f"\n{args.requests} requests per level: 60% text search, 20% image upload, 20% thumbnail; "
          f"latency of answered (200) requests in ms")
    print("| clients | requests/s | answered/s | 200 | 503 | other | all p50 | all p95 | all p99 | text p50 | "
          "image p50 | thumb p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for level in levels:
        lat = {kind: np.array(values) for kind, values in level["latencies"].items()}
        statuses = level["statuses"]
        other = sum(count for status, count in statuses.items() if status not in (200, 503))
        p = lambda kind, q: f"{np.percentile(lat[kind], q):.1f}" if len(lat.get(kind, [])) else "-"
        print(f"| {level['concurrency']} | {sum(statuses.values()) / level['elapsed']:.1f} | "
              f"{statuses[200] / level['elapsed']:.1f} | {statuses[200]} | "
              f"{statuses[503]} | {other} | {p('all', 50)} | {p('all', 95)} | {p('all', 99)} | {p('text', 50)} | "
              f"{p('image', 50)} | {p('thumbnail', 50)} |")
    print(f"\nserver RSS: {rss_before:.0f} MiB before, {peak[0]:.0f} MiB peak, {rss_after:.0f} MiB after; "
          f"/health after the load: {health}")


if __name__ == "__main__":
    main()
