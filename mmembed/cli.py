"""The `mmembed` command: checkpoint, export, serve, embed.

Errors that users cause (a missing folder, a failed model, bad input) print one clear line and exit 1;
only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mmembed.serving.server import TritonServer


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if type(e).__module__.startswith("mmembed"):
            print(f"mmembed {args.command}: {e}", file=sys.stderr)
            return 1
        raise


def _parser() -> argparse.ArgumentParser:
    from mmembed.bench.run import BenchConfig
    from mmembed.client import ClientOptions
    from mmembed.core.preprocessing import InputLimits
    from mmembed.core.types import Precision, Runtime
    from mmembed.export import BatchingOptions, ExportRequest
    from mmembed.families import FAMILIES
    from mmembed.gateway.app import GatewaySettings
    from mmembed.gateway.fetch import FetchPolicy
    from mmembed.index.job import IndexJob
    from mmembed.index.ray_job import RayOptions
    from mmembed.loadtest.run import LoadTestPlan
    from mmembed.serving.server import ServerSettings

    parser = argparse.ArgumentParser(prog="mmembed", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    checkpoint = commands.add_parser("checkpoint", help="write a random-weight checkpoint in Hugging Face layout")
    checkpoint.add_argument("family", choices=sorted(FAMILIES))
    checkpoint.add_argument("--size", required=True, help="tiny (CI) or a real model's size, e.g. so400m-512")
    checkpoint.add_argument("--out", type=Path, required=True)
    checkpoint.set_defaults(run=_checkpoint)

    export = commands.add_parser("export", help="export a checkpoint into a Triton model repository")
    export.add_argument("family", choices=sorted(FAMILIES))
    export.add_argument(
        "--checkpoint", required=True, help="checkpoint folder (Hugging Face layout), or a hub model id"
    )
    export.add_argument("--revision", default=None, help="with a hub model id: branch, tag or commit")
    export.add_argument("--repository", type=Path, required=True, help="model repository folder to write into")
    export.add_argument("--name", default=None, help="served model name (default: the family name)")
    export.add_argument(
        "--runtime", default=ExportRequest.runtime.value, choices=[r.value for r in Runtime], help="where encoders run"
    )
    export.add_argument(
        "--precision", default=ExportRequest.precision.value, choices=[p.value for p in Precision], help="gated vs fp32"
    )
    export.add_argument(
        "--device", default=ExportRequest.device, choices=["cuda", "cpu"], help="runtime torch: where it runs"
    )
    export.add_argument("--fast-jpeg", action="store_true", help="decode large JPEGs at reduced scale (faster)")
    export.add_argument(
        "--tensorrt-version-compatible",
        action="store_true",
        help="runtime tensorrt: plans later TensorRT versions run too (may be slower); "
        "by default a plan is served only by the exact TensorRT that built it",
    )
    export.add_argument(
        "--compile",
        action="store_true",
        help="runtime torch: compile the encoders ahead of time (AOTInductor) on this machine's device; "
        "served without compiling, only by the same torch build on the same kind of device",
    )
    export.add_argument(
        "--image-preprocess",
        default=ExportRequest.image_preprocess,
        choices=["pillow", "torch"],
        help="runtime torch: 'torch' decodes JPEGs with nvJPEG and resizes on the encoder's device",
    )
    export.add_argument(
        "--image-decode",
        default=ExportRequest.image_decode,
        choices=["reference", "display"],
        help="'display' decodes as a viewer shows files (EXIF, transparency on white, 16-bit scaled), not as "
        "the model's reference pipeline does",
    )
    batching = BatchingOptions
    export.add_argument("--max-batch-size", type=int, default=batching.max_batch_size, help="per image encoder batch")
    export.add_argument(
        "--text-max-batch-size", type=int, default=batching.text_max_batch_size, help="per text-only encoder batch"
    )
    export.add_argument("--max-queue-delay-us", type=int, default=batching.max_queue_delay_us)
    export.add_argument("--preprocess-instances", type=int, default=batching.preprocess_instances)
    export.add_argument("--encoder-instances", type=int, default=batching.encoder_instances)
    export.add_argument(
        "--max-queue-size", type=int, default=batching.max_queue_size, help="queued requests per model, then reject"
    )
    export.add_argument(
        "--queue-timeout", type=float, default=batching.queue_timeout_s, help="seconds a request may wait queued"
    )
    export.add_argument("--max-image-bytes", type=int, default=InputLimits.max_image_bytes)
    export.add_argument("--max-image-pixels", type=int, default=InputLimits.max_image_pixels)
    export.add_argument("--max-text-bytes", type=int, default=InputLimits.max_text_bytes)
    export.set_defaults(run=_export)

    serve = commands.add_parser("serve", help="run tritonserver on a model repository until Ctrl-C")
    serve.add_argument("--repository", type=Path, required=True)
    serve.add_argument("--grpc-port", type=int, default=ServerSettings.grpc_port)
    serve.add_argument("--http-port", type=int, default=ServerSettings.http_port)
    serve.add_argument("--metrics-port", type=int, default=ServerSettings.metrics_port)
    serve.add_argument("--log-file", type=Path, default=None, help="tritonserver's log (default: a temp file)")
    serve.add_argument("--stub-python", type=Path, default=None, help="Python the models run in (default: this)")
    serve.add_argument(
        "--wedge-timeout", type=float, default=ServerSettings.wedge_timeout_s, help="seconds a probe may go unanswered"
    )
    serve.add_argument(
        "--cuda-memory-pool-mb",
        type=int,
        default=ServerSettings.cuda_memory_pool_mb,
        help="per GPU, for tensors passed between models",
    )
    serve.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: gRPC over TLS")
    serve.add_argument("--tls-key", type=Path, default=None, help="PEM private key for --tls-cert")
    serve.add_argument("--api-key", default=None, help="require header mmembed-api-key (default: $MMEMBED_API_KEY)")
    serve.add_argument(
        "--watch-interval", type=float, default=2.0, help="seconds between health checks (0: no watchdog)"
    )
    serve.set_defaults(run=_serve)

    embed = commands.add_parser("embed", help="embed images and texts with a served model; prints JSON")
    embed.add_argument("--model", required=True)
    embed.add_argument("--image", action="append", default=[], type=Path, help="image file (repeatable)")
    embed.add_argument("--text", action="append", default=[], help="text (repeatable)")
    embed.add_argument(
        "--text-file",
        action="append",
        default=[],
        help="a file whose whole content (UTF-8, final newline dropped) is one text; - reads standard input "
        "(repeatable; after the --text texts)",
    )
    embed.add_argument("--url", default=f"localhost:{ServerSettings.grpc_port}", help="Triton gRPC endpoint host:port")
    embed.add_argument("--similarity", action="store_true", help="print the image x text cosine matrix instead")
    embed.add_argument("--query", action="store_true", help="embed the texts as search queries")
    embed.add_argument(
        "--instruction", default=None, help="the queries' task, for models that take one (NV-Embed); implies --query"
    )
    embed.add_argument("--dimensions", type=int, default=None, help="Matryoshka: keep this many dimensions")
    embed.add_argument("--timeout", type=float, default=ClientOptions.timeout_s, help="seconds for the whole call")
    embed.add_argument("--ssl", action="store_true", help="gRPC over TLS")
    embed.add_argument("--root-cert", default=None, help="PEM file of the CA to trust (default: the system's)")
    embed.add_argument("--api-key", default=os.environ.get("MMEMBED_API_KEY"), help="default: $MMEMBED_API_KEY")
    embed.set_defaults(run=_embed)

    gateway = commands.add_parser("gateway", help="an OpenAI-compatible /v1/embeddings API in front of Triton")
    gateway.add_argument("--triton-url", default=GatewaySettings.triton_url, help="Triton gRPC endpoint host:port")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    gateway.add_argument("--port", type=int, default=8080)
    gateway.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help="callers need 'Authorization: Bearer KEY' with a key from this file, one per line "
        "(or $MMEMBED_GATEWAY_API_KEYS, comma-separated; default: no key)",
    )
    gateway.add_argument("--max-items", type=int, default=GatewaySettings.max_items, help="items per request")
    gateway.add_argument(
        "--max-request-bytes", type=int, default=GatewaySettings.max_request_bytes, help="per request body"
    )
    gateway.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: HTTPS")
    gateway.add_argument("--tls-key", type=Path, default=None, help="PEM private key for --tls-cert")
    gateway.add_argument(
        "--fetch-host",
        action="append",
        default=[],
        help="fetch image URLs from this host ('*.example.com': its subdomains; repeatable; default: no URLs)",
    )
    gateway.add_argument("--fetch-max-bytes", type=int, default=FetchPolicy.max_bytes, help="per fetched image")
    gateway.add_argument("--fetch-timeout", type=float, default=FetchPolicy.timeout_s, help="seconds per fetch")
    gateway.add_argument("--triton-ssl", action="store_true", help="gRPC over TLS to Triton")
    gateway.add_argument("--triton-api-key", default=os.environ.get("MMEMBED_API_KEY"), help="Triton's key")
    gateway.set_defaults(run=_gateway)

    index = commands.add_parser("index", help="embed a folder or list of images into a Qdrant collection")
    index.add_argument(
        "source", type=Path, help="a folder (recursive), or a .csv / .jsonl / .parquet of path[,caption]"
    )
    index.add_argument("--model", required=True, help="the served model to embed with")
    index.add_argument("--collection", required=True)
    index.add_argument("--url", default=IndexJob.url, help="Triton gRPC endpoint host:port (several: h1:8001,h2:8001)")
    index.add_argument("--qdrant-path", type=Path, default=IndexJob.qdrant_path, help="local collection folder")
    index.add_argument("--qdrant-url", default=None, help="a Qdrant server instead of the local folder")
    index.add_argument("--batch-size", type=int, default=IndexJob.batch_size, help="images per round trip")
    index.add_argument(
        "--allow-url-host",
        action="append",
        default=[],
        help="fetch image URLs of a list file from this host (repeatable; *.example.com for subdomains); "
        "without it URLs are not fetched",
    )
    index.add_argument(
        "--allow-url-network",
        action="append",
        default=[],
        help="a private network (CIDR) those hosts may resolve into, e.g. an internal image store",
    )
    index.add_argument("--ray", action="store_true", help="run the job on Ray Data, over every endpoint in --url")
    index.add_argument(
        "--ray-address",
        default=RayOptions.address,
        help="the Ray cluster (default: $RAY_ADDRESS, else one started on this machine, else a new local one)",
    )
    index.add_argument(
        "--ray-workers-per-endpoint",
        type=int,
        default=RayOptions.workers_per_endpoint,
        help="Ray actors per Triton endpoint",
    )
    index.set_defaults(run=_index)

    search = commands.add_parser("search", help="search an indexed collection by text or by image")
    search.add_argument("text", nargs="?", default=None, help="what to look for (embedded as a search query)")
    search.add_argument("--image", type=Path, default=None, help="or an image to find similar ones to")
    search.add_argument("--collection", required=True)
    search.add_argument("--model", default=None, help="default: the model the collection was indexed with")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--hybrid", action="store_true", help="search the captions: dense + BM25 words, fused (RRF)")
    search.add_argument("--json", action="store_true", help="a JSON list of {path, score, caption}")
    search.add_argument("--url", default=IndexJob.url, help="Triton gRPC endpoint host:port")
    search.add_argument("--qdrant-path", type=Path, default=IndexJob.qdrant_path, help="local collection folder")
    search.add_argument("--qdrant-url", default=None, help="a Qdrant server instead of the local folder")
    search.set_defaults(run=_search)

    page = commands.add_parser("search-page", help="a web page to search an indexed collection by text or image")
    page.add_argument("--collection", required=True)
    page.add_argument("--model", default=None, help="default: the model the collection was indexed with")
    page.add_argument("--url", default=IndexJob.url, help="Triton gRPC endpoint host:port")
    page.add_argument("--qdrant-path", type=Path, default=IndexJob.qdrant_path, help="local collection folder")
    page.add_argument("--qdrant-url", default=None, help="a Qdrant server instead of the local folder")
    page.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    page.add_argument("--port", type=int, default=8090)
    page.set_defaults(run=_search_page)

    bench = commands.add_parser("bench", help="measure served, encoder-only and transformers-baseline throughput")
    bench.add_argument("--family", default=BenchConfig.family, choices=sorted(FAMILIES))
    bench.add_argument("--size", default=BenchConfig.size, help="checkpoint size to build (tiny for a CPU rehearsal)")
    bench.add_argument(
        "--precision",
        action="append",
        choices=[p.value for p in Precision],
        help=f"repeatable (default: {' and '.join(BenchConfig.precisions)})",
    )
    bench.add_argument("--device", default=BenchConfig.device, choices=["cuda", "cpu"])
    bench.add_argument("--seconds", type=float, default=BenchConfig.seconds, help="length of each served image phase")
    bench.add_argument("--processes", type=int, default=BenchConfig.processes, help="load-generator processes")
    bench.add_argument("--threads", type=int, default=BenchConfig.threads, help="concurrent users per process")
    bench.add_argument("--preprocess-instances", type=int, default=BenchConfig.preprocess_instances)
    bench.add_argument("--encoder-instances", type=int, default=BenchConfig.encoder_instances)
    bench.add_argument(
        "--compile", action="store_true", help="export compiles the encoders ahead of time (served and alone)"
    )
    bench.add_argument(
        "--image-preprocess",
        default=BenchConfig.image_preprocess,
        choices=["pillow", "torch"],
        help="served image preprocessing",
    )
    bench.add_argument("--work-dir", type=Path, default=Path("mmembed-bench"), help="checkpoint + repository")
    bench.add_argument("--report", type=Path, default=None, help="also write the full result as JSON here")
    steps = ["smoke", "encoder", "baseline", "preprocess", "served"]
    bench.add_argument("--skip", action="append", default=[], choices=steps, help="leave a step out (repeatable)")
    bench.set_defaults(run=_bench)

    load = commands.add_parser("loadtest", help="Locust load test of a served model; writes a report and chart")
    load.add_argument("--url", default=f"localhost:{ServerSettings.grpc_port}", help="Triton gRPC endpoint host:port")
    load.add_argument("--model", required=True)
    load.add_argument(
        "--users", type=int, default=LoadTestPlan.users, help="concurrent users (each one request at a time)"
    )
    load.add_argument("--spawn-rate", type=float, default=LoadTestPlan.spawn_rate, help="users started per second")
    load.add_argument("--duration", default=f"{LoadTestPlan.duration_s:g}s", help="how long: 90, 90s, 5m, 1h")
    load.add_argument("--mix", default=LoadTestPlan.mix, choices=["images", "texts", "pairs"])
    load.add_argument("--batch-size", type=int, default=LoadTestPlan.batch_size, help="items per request")
    load.add_argument("--corpus", type=Path, default=None, help="folder of images (default: generated JPEGs)")
    load.add_argument(
        "--workers", type=int, default=LoadTestPlan.workers, help="local Locust workers (distributed mode)"
    )
    load.add_argument("--report-dir", type=Path, default=Path("loadtest-report"))
    load.add_argument("--metrics-url", default=None, help="Triton metrics (default: http://HOST:8002/metrics)")
    load.add_argument("--gpu", default=None, help="GPU name in the prices file, for the cost line")
    load.add_argument("--gpu-price-per-hour", type=float, default=None, help="or the GPU's price, for the cost line")
    load.add_argument(
        "--utilization", type=float, default=LoadTestPlan.utilization, help="expected average use, for the cost line"
    )
    load.set_defaults(run=_loadtest)

    cost = commands.add_parser("cost", help="cost per 1M image-text pairs and break-even against managed APIs")
    cost.add_argument("--pairs-per-hour", type=float, required=True, help="measured throughput")
    cost.add_argument("--gpu-price-per-hour", type=float, default=None, help="USD per GPU hour")
    cost.add_argument("--gpu", default=None, help="a GPU name from the prices file instead of a price")
    cost.add_argument("--utilization", type=float, default=1.0, help="average use of the GPU, 0-1")
    cost.add_argument("--text-tokens-per-pair", type=int, default=20, help="API text tokens of one pair")
    cost.add_argument("--image-size", default="512x512", help="WIDTHxHEIGHT of the image an API bills")
    cost.add_argument("--prices", type=Path, default=None, help="JSON merged over the bundled prices.json")
    cost.set_defaults(run=_cost)
    for command in commands.choices.values():
        command.formatter_class = _ShowDefaults
    return parser


class _ShowDefaults(argparse.HelpFormatter):
    """--help shows each option's default (taken from the settings dataclasses) unless its help says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".strip()


def _checkpoint(args: argparse.Namespace) -> int:
    from mmembed.families import get_family

    get_family(args.family).make_checkpoint(args.size, args.out)
    print(f"wrote {args.family} {args.size} checkpoint to {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from mmembed.core.preprocessing import InputLimits
    from mmembed.core.types import Precision, Runtime
    from mmembed.export import BatchingOptions, ExportRequest, export_model
    from mmembed.families import get_family
    from mmembed.families.hub import resolve_checkpoint

    request = ExportRequest(
        family=get_family(args.family),
        checkpoint=resolve_checkpoint(args.checkpoint, args.revision),
        repository=args.repository,
        name=args.name or "",
        runtime=Runtime(args.runtime),
        precision=Precision(args.precision),
        batching=BatchingOptions(
            max_batch_size=args.max_batch_size,
            text_max_batch_size=args.text_max_batch_size,
            max_queue_delay_us=args.max_queue_delay_us,
            preprocess_instances=args.preprocess_instances,
            encoder_instances=args.encoder_instances,
            max_queue_size=args.max_queue_size,
            queue_timeout_s=args.queue_timeout,
        ),
        device=args.device,
        fast_jpeg=args.fast_jpeg,
        compile=args.compile,
        tensorrt_version_compatible=args.tensorrt_version_compatible,
        image_preprocess=args.image_preprocess,
        image_decode=args.image_decode,
        limits=InputLimits(
            max_image_bytes=args.max_image_bytes,
            max_image_pixels=args.max_image_pixels,
            max_text_bytes=args.max_text_bytes,
        ),
    )
    export_model(request)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mmembed.serving.server import ServerSettings, TritonServer

    settings = ServerSettings(
        repository=args.repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_file=args.log_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        wedge_timeout_s=args.wedge_timeout,
        cuda_memory_pool_mb=args.cuda_memory_pool_mb,
        **({"stub_python": args.stub_python} if args.stub_python else {}),
        **({"api_key": args.api_key} if args.api_key else {}),
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"starting tritonserver on {args.repository} ...", flush=True)
    with TritonServer(settings) as server:
        print(f"ready: {', '.join(server.ready_models())}")
        for report in server.gate_reports:
            print(f"gate    {report.line()}")
        print(f"gRPC    {server.grpc_url}")
        print(f"HTTP    localhost:{settings.http_port}")
        print(f"metrics http://localhost:{settings.metrics_port}/metrics")
        print(f"log     {server.log_file}")
        print("Ctrl-C stops", flush=True)
        try:
            _watch(server, args.watch_interval)
        except KeyboardInterrupt:
            print("stopping tritonserver ...", flush=True)
    return 0


def _watch(server: TritonServer, interval_s: float) -> None:
    """Until interrupted: every INTERVAL_S, reload a model whose stub died or hung, or restart a dead server."""
    from mmembed.serving.watchdog import watch

    if interval_s <= 0:
        signal.pause()
        return
    watch(server, interval_s, log=lambda line: print(line, flush=True))


def _embed(args: argparse.Namespace) -> int:
    from mmembed.client import ClientOptions, EmbeddingClient

    texts: list[str] = list(args.text)
    labels: list[str | dict[str, str]] = list(args.text)
    for name in args.text_file:
        texts.append(_read_text_file(name))
        labels.append({"file": name})
    if not args.image and not texts:
        print("mmembed embed: give at least one --image, --text or --text-file", file=sys.stderr)
        return 2
    options = ClientOptions(
        timeout_s=args.timeout, ssl=args.ssl, root_certificates=args.root_cert, api_key=args.api_key
    )
    with EmbeddingClient(args.url, options) as client:
        dimensions = args.dimensions
        images = client.embed_images(args.model, args.image, dimensions=dimensions) if args.image else None
        query = args.query or args.instruction is not None
        vectors = (
            client.embed_texts(args.model, texts, query=query, instruction=args.instruction, dimensions=dimensions)
            if texts
            else None
        )
    if args.similarity:
        if images is None or vectors is None:
            print("mmembed embed: --similarity needs at least one --image and one --text", file=sys.stderr)
            return 2
        output: dict[str, object] = {
            "model": args.model,
            "images": [str(p) for p in args.image],
            "texts": labels,
            "cosine": (images @ vectors.T).astype(np.float64).round(6).tolist(),
        }
    else:
        output = {"model": args.model}
        if images is not None:
            pairs = zip(args.image, images, strict=True)
            output["images"] = [{"path": str(p), "embedding": v.tolist()} for p, v in pairs]
        if vectors is not None:
            output["texts"] = [
                {**({"text": label} if isinstance(label, str) else label), "embedding": vector.tolist()}
                for label, vector in zip(labels, vectors, strict=True)
            ]
    print(json.dumps(output, indent=2 if args.similarity else None))
    return 0


def _read_text_file(name: str) -> str:
    """One text from a file (or standard input for "-"): its whole content, without the final newline."""
    from mmembed.client import InvalidInputError

    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read text file {name}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"text file {name} is not UTF-8 (byte {e.start})") from None
    return text.removesuffix("\n")


def _gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from mmembed.client import ClientOptions
    from mmembed.gateway.app import GatewaySettings, create_app, read_api_keys
    from mmembed.gateway.fetch import FetchPolicy

    settings = GatewaySettings(
        triton_url=args.triton_url,
        api_keys=read_api_keys(args.api_key_file, os.environ.get("MMEMBED_GATEWAY_API_KEYS", "")),
        max_items=args.max_items,
        max_request_bytes=args.max_request_bytes,
        triton=ClientOptions(ssl=args.triton_ssl, api_key=args.triton_api_key),
        fetch=FetchPolicy(
            allowed_hosts=tuple(args.fetch_host), max_bytes=args.fetch_max_bytes, timeout_s=args.fetch_timeout
        ),
    )
    if (args.tls_cert is None) != (args.tls_key is None):
        print("mmembed gateway: TLS needs both --tls-cert and --tls-key", file=sys.stderr)
        return 2
    keys = f"{len(settings.api_keys)} API key(s)" if settings.api_keys else "no API key (anyone may call it)"
    print(f"gateway on {args.host}:{args.port} -> Triton {args.triton_url}; {keys}", flush=True)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_level="warning",
    )
    return 0


def _index(args: argparse.Namespace) -> int:
    from mmembed.gateway.fetch import FetchPolicy
    from mmembed.index.job import IndexJob, run_index

    job = IndexJob(
        source=args.source,
        model=args.model,
        collection=args.collection,
        url=args.url,
        qdrant_path=args.qdrant_path,
        qdrant_url=args.qdrant_url,
        batch_size=args.batch_size,
        fetch=FetchPolicy(allowed_hosts=tuple(args.allow_url_host), allowed_networks=tuple(args.allow_url_network)),
    )
    if args.ray:
        from mmembed.index.ray_job import RayOptions, run_index_on_ray

        options = RayOptions(address=args.ray_address, workers_per_endpoint=args.ray_workers_per_endpoint)
        summary = run_index_on_ray(job, options)
    else:
        summary = run_index(job)
    for path, reason in sorted(summary.failed.items()):
        print(f"failed  {path}: {reason}")
    print(summary.line(), flush=True)
    return 0


def _search_page(args: argparse.Namespace) -> int:
    import uvicorn

    from mmembed.index.page import PageSettings, create_page_app

    settings = PageSettings(
        collection=args.collection,
        model=args.model,
        url=args.url,
        qdrant_path=args.qdrant_path,
        qdrant_url=args.qdrant_url,
    )
    print(f"search page for collection {args.collection}: http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(create_page_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


def _search(args: argparse.Namespace) -> int:
    from mmembed.index.search import search

    hits = search(
        collection=args.collection,
        text=args.text,
        image=args.image,
        model=args.model,
        top_k=args.top_k,
        hybrid=args.hybrid,
        url=args.url,
        qdrant_path=args.qdrant_path,
        qdrant_url=args.qdrant_url,
    )
    if args.json:
        print(json.dumps([{"path": hit.path, "score": hit.score, "caption": hit.caption} for hit in hits]))
    for hit in hits if not args.json else ():
        print(f"{hit.score:.4f}  {hit.path}" + (f"  {hit.caption}" if hit.caption else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from mmembed.bench.report import table
    from mmembed.bench.run import BenchConfig, run_benchmark, write_json

    config = BenchConfig(
        work_dir=args.work_dir,
        family=args.family,
        size=args.size,
        precisions=tuple(args.precision or BenchConfig.precisions),
        device=args.device,
        seconds=args.seconds,
        processes=args.processes,
        threads=args.threads,
        preprocess_instances=args.preprocess_instances,
        encoder_instances=args.encoder_instances,
        compile=args.compile,
        image_preprocess=args.image_preprocess,
        skip=tuple(args.skip),
    )
    result = run_benchmark(config, log=lambda line: print(line, flush=True))
    if args.report is not None:
        write_json(result, args.report)
    print(table(result))
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from mmembed.loadtest.report import markdown
    from mmembed.loadtest.run import LoadTestPlan, parse_duration, run_loadtest

    plan = LoadTestPlan(
        url=args.url,
        model=args.model,
        report_dir=args.report_dir,
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration_s=parse_duration(args.duration),
        mix=args.mix,
        batch_size=args.batch_size,
        corpus=args.corpus,
        workers=args.workers,
        metrics_url=args.metrics_url,
        gpu=args.gpu,
        gpu_price_per_hour=args.gpu_price_per_hour,
        utilization=args.utilization,
    )
    summary = run_loadtest(plan, log=lambda line: print(line, flush=True))
    print(markdown(summary))
    print(f"report: {args.report_dir}/summary.md, chart.png, locust.html, locust_*.csv, triton_metrics.csv")
    return 0


def _cost(args: argparse.Namespace) -> int:
    from mmembed.loadtest.cost import CostError, PairShape, cost_report, load_prices

    try:
        width, height = (int(side) for side in args.image_size.lower().split("x"))
    except ValueError:
        raise CostError(f"--image-size {args.image_size!r}: use WIDTHxHEIGHT, e.g. 512x512") from None
    report = cost_report(
        pairs_per_hour=args.pairs_per_hour,
        gpu=args.gpu,
        usd_per_hour=args.gpu_price_per_hour,
        utilization=args.utilization,
        pair=PairShape(text_tokens=args.text_tokens_per_pair, image_width=width, image_height=height),
        prices=load_prices(args.prices),
    )
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
