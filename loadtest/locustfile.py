"""Locust users for mmembed, built on the typed gRPC client.

    locust -f $(python -c "import mmembed.loadtest as l; print(l.LOCUSTFILE)") --host localhost:8001 \
        --model siglip2 --mix pairs --batch-size 8 [--corpus DIR]

`mmembed loadtest` runs this file headless and writes the report; the plain `locust` command (web UI,
or `--master` / `--worker` on several machines for load beyond one) works on it unchanged. Every request
is reported to Locust under its modality (`images`, `texts`), with the items it carried as its size.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # gRPC must yield to gevent, or one user blocks every other user of the process

from locust import User, constant, events, task  # noqa: E402
from locust.runners import MasterRunner  # noqa: E402
from mmembed.client import ClientOptions, EmbeddingClient, EmbeddingError  # noqa: E402
from mmembed.loadtest import MIXES  # noqa: E402
from mmembed.loadtest.corpus import load_images, load_texts  # noqa: E402

_corpus: dict[str, list[Any]] = {}


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _options(parser: Any) -> None:
    parser.add_argument("--model", default="siglip2", help="served model name (its NAME_image / NAME_text)")
    parser.add_argument("--mix", choices=MIXES, default="pairs", help="what each task sends")
    parser.add_argument("--batch-size", type=int, default=8, help="items per request")
    parser.add_argument("--corpus", default="", help="folder of images (default: generated photo-like JPEGs)")
    parser.add_argument("--corpus-size", type=int, default=32, help="images to load or generate")


@events.init.add_listener  # type: ignore[untyped-decorator]
def _load_corpus(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the master sends nothing
    options = environment.parsed_options
    _corpus["images"] = load_images(options.corpus, options.corpus_size)
    _corpus["texts"] = load_texts(256)


class EmbeddingUser(User):
    """One user: back-to-back requests, each waiting for the previous one (closed loop)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.model = options.model
        self.mix = options.mix
        self.batch_size = options.batch_size
        client_options = ClientOptions(
            timeout_s=120, image_batch_size=self.batch_size, text_batch_size=self.batch_size, max_in_flight=1
        )
        self.embedding_client = EmbeddingClient(self.host, client_options)
        self.rng = random.Random()

    def on_stop(self) -> None:
        self.embedding_client.close()

    @task
    def embed(self) -> None:
        if self.mix in ("images", "pairs"):
            self._request("images", self.embedding_client.embed_images)
        if self.mix in ("texts", "pairs"):
            self._request("texts", self.embedding_client.embed_texts)

    def _request(self, kind: str, call: Callable[..., Any]) -> None:
        items = [self.rng.choice(_corpus[kind]) for _ in range(self.batch_size)]
        started = time.perf_counter()
        error: Exception | None = None
        try:
            call(self.model, items)
        except EmbeddingError as e:
            error = e
        self.environment.events.request.fire(
            request_type="grpc",
            name=kind,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(items),
            exception=error,
            context={},
        )
