"""Locust users for mmembed, built on the typed gRPC client.

    locust -f $(python -c "import mmembed.loadtest as l; print(l.LOCUSTFILE)") --host localhost:8001 \
        --model siglip2 --mix pairs --batch-size 8 [--corpus DIR]

`mmembed loadtest` runs this file headless and writes the report; the plain `locust` command (web UI,
or `--master` / `--worker` on several machines for load beyond one) works on it unchanged. Every request
is reported to Locust under its modality (`images`, `texts`), with the items it embedded as its size; at
the end `--results-file` receives the final counts and the measured window.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # gRPC must yield to gevent, or one user blocks every other user of the process

from locust import User, constant, events, task  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

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
    parser.add_argument("--results-file", default="", help="write the final per-kind results here (JSON)")


# The measured window: from the start of the test to its stop or its last answer, whichever is later
# (users finish their request in flight when the run time is up). Set on the master in distributed mode.
_window: dict[str, float] = {}


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _started(environment: Any, **_: Any) -> None:
    _window["start"] = time.time()


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _stopped(environment: Any, **_: Any) -> None:
    _window["stop"] = time.time()


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _write_results(environment: Any, **_: Any) -> None:
    """The final statistics, once every answer is in: the counts every table of the report shares."""
    path = environment.parsed_options.results_file
    if not path or isinstance(environment.runner, WorkerRunner):
        return
    kinds = {}
    for kind in ("images", "texts"):
        entry = environment.stats.entries.get((kind, "grpc"))
        if entry is None or not entry.num_requests:
            continue
        kinds[kind] = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "items": entry.total_content_length,  # items of successful requests (failed ones report 0)
            "last_answer": entry.last_request_timestamp,
            **{f"p{p}_ms": entry.get_response_time_percentile(p / 100) for p in (50, 95, 99)},
        }
    # Locally the exception itself; on a master, what its workers reported: the exception's repr.
    errors = [[_repr(entry.error), entry.occurrences] for entry in environment.stats.errors.values()]
    with open(path, "w") as handle:
        json.dump(
            {"start": _window.get("start"), "stop": _window.get("stop"), "kinds": kinds, "errors": errors}, handle
        )


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
            response_length=0 if error else len(items),
            exception=error,
            context={},
        )


def _repr(error: object) -> str:
    return error if isinstance(error, str) else repr(error)
