"""Commands for searching a gallery: ``index build``, ``index search``, ``index info``, ``serve``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from personvl.commands.arguments import positive_int


def _cmd_index_build(args: argparse.Namespace) -> int:
    from personvl.index import BackendConfig, build_index

    backend = None
    if any(value is not None for value in (args.backend, args.nlist, args.nprobe, args.hnsw_m, args.ef_search)):
        knobs = {name: getattr(args, name) for name in ("nlist", "nprobe", "hnsw_m", "ef_search")
                 if getattr(args, name) is not None}
        backend = BackendConfig(args.backend or "auto", **knobs)
    report = build_index(args.model, args.images, args.out, weights=args.weights, dataset=args.dataset,
                         split=args.split,
                         backend=backend, batch_size=args.batch_size, chunk_size=args.chunk_size,
                         progress=not args.no_progress)
    print(report.summary())
    return 0


def format_hits(hits) -> str:
    """Results as a table: rank, score, id, identity, camera, path, first caption."""
    lines = [f"{'rank':>4}  {'score':>6}  {'id':>7}  {'pid':>6}  {'cam':>3}  path  caption"]
    for rank, hit in enumerate(hits, 1):
        pid = "-" if hit.pid is None else hit.pid
        camid = "-" if hit.camid is None else hit.camid
        caption = hit.captions[0] if hit.captions else ""
        if len(caption) > 70:
            caption = caption[:67] + "..."
        lines.append(f"{rank:>4}  {hit.score:6.3f}  {hit.id:>7}  {pid:>6}  {camid:>3}  {hit.path}  {caption}")
    return "\n".join(lines)


def _cmd_index_search(args: argparse.Namespace) -> int:
    from personvl.index import open_index

    index = open_index(args.index, exact=args.exact)
    if args.text is not None:
        hits = index.search_text(args.text, args.k)
    elif args.image is not None:
        hits = index.search_image(args.image, args.k)
    else:
        hits = index.search_similar(args.like, args.k)
    if args.json:
        print(json.dumps([dict(hit.to_dict(), path=hit.path) for hit in hits], indent=1))
    else:
        print(format_hits(hits))
    return 0


def _cmd_index_info(args: argparse.Namespace) -> int:
    from personvl.index import open_index

    info = open_index(args.index).describe()
    for key, value in info.items():
        print(f"{key:>13}  {value}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from personvl.serve import ServiceLimits, run_server

    token = args.token or os.environ.get("PERSONVL_API_TOKEN") or None
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"personvl serve: warning: listening on {args.host} without a token; anyone who can "
              f"reach the port can search the gallery (set --token or PERSONVL_API_TOKEN)", file=sys.stderr)
    limits = ServiceLimits(max_upload_bytes=args.max_upload_mb * 1024 * 1024, max_in_flight=args.max_in_flight)
    run_server(args.index, host=args.host, port=args.port, token=token, limits=limits)
    return 0


def register(commands) -> None:
    index = commands.add_parser(
        "index", help="build and query a search index of a gallery",
        description="Embed a gallery of person images with a model into a faiss index, then search "
                    "it by description or by image.")
    index_commands = index.add_subparsers(dest="index_command", metavar="ACTION", required=True,
                                          help="build, search or info")

    build = index_commands.add_parser(
        "build", help="embed a folder, JSONL or dataset into an index (incremental, resumable)",
        description="Embed the images of IMAGES with MODEL into INDEX_DIR in batches. Re-running adds "
                    "new images and skips indexed ones; an interrupted build resumes where it stopped.")
    build.add_argument("model", metavar="MODEL",
                       help="a saved model directory, or a registered model name with --weights")
    build.add_argument("images", metavar="IMAGES",
                       help="a folder of images, a .jsonl of records, or a dataset root (with --dataset)")
    build.add_argument("--out", required=True, metavar="INDEX_DIR", help="the index directory (new or existing)")
    build.add_argument("--weights", default=None, metavar="PATH",
                       help="weights of a registered MODEL name (a checkpoint file or folder)")
    build.add_argument("--dataset", default=None, metavar="NAME",
                       help="read IMAGES as this dataset format, e.g. cuhk-pedes or market1501")
    build.add_argument("--split", default=None, metavar="SPLIT",
                       help="the dataset split to index (default: the format's first split)")
    build.add_argument("--backend", default=None, choices=("auto", "exact", "ivf", "hnsw"),
                       help="exact search, or an approximate ivf / hnsw index (default: as before, "
                            "or auto: exact below 100,000 images)")
    build.add_argument("--nlist", type=positive_int, default=None, metavar="N",
                       help="ivf: inverted lists (default about sqrt of the gallery size)")
    build.add_argument("--nprobe", type=positive_int, default=None, metavar="N",
                       help="ivf: lists searched per query (default nlist/8, at least 8)")
    build.add_argument("--hnsw-m", type=positive_int, default=None, metavar="M",
                       help="hnsw: neighbours per node (default 32)")
    build.add_argument("--ef-search", type=positive_int, default=None, metavar="EF",
                       help="hnsw: candidates kept while searching (default 128)")
    build.add_argument("--batch-size", type=positive_int, default=32, metavar="B",
                       help="images embedded at once (default %(default)s)")
    build.add_argument("--chunk-size", type=positive_int, default=1024, metavar="C",
                       help="images committed to disk at once; a killed build loses at most one "
                            "chunk of work (default %(default)s)")
    build.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    build.set_defaults(handler=_cmd_index_build)

    search = index_commands.add_parser(
        "search", help="query an index by description or image",
        description="Print the K nearest images of INDEX_DIR to a description, an image file, or "
                    "an indexed image.")
    search.add_argument("index", metavar="INDEX_DIR", help="an index built by 'personvl index build'")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", default=None, metavar="TEXT", help="a description of the person")
    query.add_argument("--image", default=None, metavar="PATH", help="an image of the person")
    query.add_argument("--like", type=int, default=None, metavar="ID", help="the id of an indexed image")
    search.add_argument("-k", type=positive_int, default=10, metavar="K", help="results (default %(default)s)")
    search.add_argument("--exact", action="store_true", help="scan every vector even if the index is approximate")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.set_defaults(handler=_cmd_index_search)

    info = index_commands.add_parser(
        "info", help="size, model and backend of an index",
        description="Print how many images INDEX_DIR holds, its model, backend and measured recall.")
    info.add_argument("index", metavar="INDEX_DIR", help="an index built by 'personvl index build'")
    info.set_defaults(handler=_cmd_index_info)

    serve = commands.add_parser(
        "serve", help="serve an index over HTTP: JSON API and a search page",
        description="Start the search service for INDEX_DIR: a web page at /, the JSON API "
                    "(/search/text, /search/image, /search/similar, /images/{id}, /attributes, /health) "
                    "and its OpenAPI docs at /docs.")
    serve.add_argument("index", metavar="INDEX_DIR", help="an index built by 'personvl index build'")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    serve.add_argument("--port", type=positive_int, default=8000, help="port (default %(default)s)")
    serve.add_argument("--token", default=None, metavar="T",
                       help="require this API token on every request (default: $PERSONVL_API_TOKEN, else none)")
    serve.add_argument("--max-upload-mb", type=positive_int, default=8, metavar="MB",
                       help="largest image upload accepted (default %(default)s)")
    serve.add_argument("--max-in-flight", type=positive_int, default=32, metavar="N",
                       help="requests computing at once; more are answered 503 (default %(default)s)")
    serve.set_defaults(handler=_cmd_serve)
