"""Start tritonserver on a model repository, wait until every model is ready, stop it cleanly.

The server is the one on PATH (as in the NGC tritonserver containers) or else the one shipped in the
nvidia-pytriton wheel. For the wheel, the Python-backend stub built for this interpreter's version is put
in a private backend folder. Either way the stub runs this interpreter's environment, so the Python
models import the same mmembed, numpy, Pillow and onnxruntime as this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from mmembed.core.names import ADMIN_KEY_HEADER, API_KEY_HEADER
from mmembed.core.numeric_gate import GateReport, PrecisionGateError
from mmembed.serving.load_gate import check_repository, references
from mmembed.serving.probe import Prober
from mmembed.serving.processes import children, cmdline, wait_for_group_exit
from mmembed.serving.tensorrt_versions import BACKEND_CONFIG as TENSORRT_BACKEND_CONFIG
from mmembed.serving.tensorrt_versions import (
    VERSION_FILE,
    TensorRTVersionError,
    check_plan_versions,
    server_tensorrt_version,
)


class ServeError(RuntimeError):
    """The server cannot be found, cannot start, or a model failed to load (the message says which)."""


# Triton's protocol groups (--grpc-restricted-protocol / --http-restricted-api). The model repository's
# (load, unload, index) is an administrator's: with explicit model control its load call can install a
# model from files sent in the request, i.e. run code; only this process holds its key. Clients list the
# models through the statistics protocol instead.
ADMIN_PROTOCOLS = "shared-memory,trace,logging,model-repository"
CLIENT_PROTOCOLS = "metadata,inference,model-config,statistics"  # behind the API key, when one is set


def _restrictions(api_key: str | None, admin_key: str) -> list[str]:
    """The tritonserver flags that lock the admin protocols behind ADMIN_KEY and, with an API key, every
    other protocol but health behind it."""
    rules = [f"{ADMIN_PROTOCOLS}:{ADMIN_KEY_HEADER}={admin_key}"]
    if api_key is not None:
        rules.append(f"{CLIENT_PROTOCOLS}:{API_KEY_HEADER}={api_key}")
    return [flag for rule in rules for flag in (f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}")]


def check_ports_free(ports: dict[str, int]) -> None:
    """Raise ServeError naming the first of PORTS (name -> port) that something already listens on.

    Triton started on a held port exits, while the other process keeps answering every probe sent
    there, so a server could seem ready and healthy that is not this one."""
    for name, port in ports.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
            try:
                s.bind(("", port))
            except OSError as e:
                raise ServeError(
                    f"{name} port {port} is already in use ({e.strerror}): another tritonserver or service holds "
                    f"it; stop that one or pick other ports (--grpc-port, --http-port, --metrics-port)"
                ) from None


def free_port() -> int:
    """A TCP port the OS says is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    startup_timeout_s: float = 600.0
    log_file: Path | None = None  # default: a new mmembed-tritonserver-*.log in the temporary folder
    # The Python whose environment the Python-backend models run in (same minor version as this one).
    # Default: $MMEMBED_STUB_PYTHON, else this interpreter. Another one helps where this environment
    # has numpy 2, which the pip Triton's Python backend cannot use.
    stub_python: Path | None = field(default_factory=lambda: _env_path("MMEMBED_STUB_PYTHON"))
    # gRPC over TLS with this certificate chain and private key (PEM); clients then pass ssl=True.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # With an API key every gRPC and HTTP protocol but health needs the header `mmembed-api-key: KEY`.
    # Without one, only the admin protocols (shared memory, trace, logging) are locked, with a key
    # nobody is given: an embedding server has no use for them.
    api_key: str | None = field(default_factory=lambda: os.environ.get("MMEMBED_API_KEY") or None)
    # The watchdog's probes: an ensemble that has not answered a tiny request for this long is hung
    # (queued requests are rejected after the queue timeout, so load alone never takes this long).
    wedge_timeout_s: float = 120.0
    # Per-GPU CUDA memory pool for tensors handed between models on the GPU (pixels with
    # --image-preprocess torch: 50 MB for 16 images at 512 px). Triton's default, 64 MB, runs out under
    # load, and the Python backend then fails those requests (triton-inference-server/server#8177).
    cuda_memory_pool_mb: int = 2048

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServeError("TLS needs both a certificate and a key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ServeError(f"TLS file {path} does not exist")

    @classmethod
    def on_free_ports(cls, repository: Path) -> ServerSettings:
        """Settings with three ports the OS says are free now: for tests and benchmarks beside other servers."""
        return cls(repository=repository, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())


def visible_gpu_count() -> int:
    """GPUs tritonserver will see: $CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists (0 without it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([device for device in visible.split(",") if device.strip() and device.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return len([line for line in listing.stdout.splitlines() if line.startswith("GPU ")])


def cuda_memory_pool_flags(gpus: int, megabytes: int) -> list[str]:
    """tritonserver's flags for a CUDA memory pool of MEGABYTES on each of GPUS devices."""
    return [f"--cuda-memory-pool-byte-size={gpu}:{megabytes * 1024 * 1024}" for gpu in range(gpus)]


@dataclass(frozen=True, kw_only=True)
class TritonInstall:
    binary: Path
    backend_dir: Path | None  # None: the server's own default (NGC containers)
    library_dir: Path | None


def find_tritonserver() -> TritonInstall:
    """The tritonserver on PATH, else the one in the nvidia-pytriton wheel, else ServeError."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(binary=Path(on_path), backend_dir=None, library_dir=None)
    try:
        import pytriton
    except ImportError:
        raise ServeError(
            "no tritonserver found: none on PATH and the nvidia-pytriton wheel is not installed "
            "(pip install 'mmembed[serve]', or run inside an NGC tritonserver container)"
        ) from None
    site = Path(pytriton.__file__).parent.parent
    binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServeError(f"the nvidia-pytriton wheel has no tritonserver at {binary}")
    return TritonInstall(
        binary=binary,
        backend_dir=site / "pytriton" / "tritonserver" / "backends",
        library_dir=site / "nvidia_pytriton.libs",
    )


def _prepare_wheel_backends(install: TritonInstall, workdir: Path) -> Path:
    """A backend folder whose Python backend carries the stub for this interpreter's version."""
    assert install.backend_dir is not None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.backend_dir.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServeError(f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}")
    python_backend = workdir / "backends" / "python"
    python_backend.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(install.backend_dir / "python" / name, python_backend / name)
    shutil.copy2(stub, python_backend / stub.name)
    return workdir / "backends"


def _stub_environment(install: TritonInstall, stub_python: Path | None) -> dict[str, str]:
    """This process's environment, set so the stub's embedded Python imports what this interpreter does.

    The stub finds its Python installation by looking for `python3` on PATH (it ignores PYTHONPATH), so
    this interpreter's bin folder goes first: a virtual environment, editable installs included, then
    works inside the stub as it does here. The stub links libpython dynamically; where this interpreter
    has its own shared libpython (pyenv, conda), that one goes first, or the stub could load a system
    libpython of another patch release whose C API the standard library's extension modules reject
    (seen: `_ssl` failing with "undefined symbol: _PyModule_Add").
    """
    env = dict(os.environ)
    python = stub_python or Path(sys.executable)
    if not python.is_file():
        raise ServeError(f"stub Python {python} does not exist")
    env["PATH"] = os.pathsep.join(filter(None, [str(python.parent), env.get("PATH")]))
    libraries = [str(install.library_dir)] if install.library_dir is not None else []
    if stub_python is None and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libraries.insert(0, str(sysconfig.get_config_var("LIBDIR")))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*libraries, env.get("LD_LIBRARY_PATH")]))
    return env


def tensorrt_flags(repository: Path, server_version: str | None) -> list[str]:
    """Refuse to start on TensorRT plans a server with SERVER_VERSION may not run, naming the model; the
    backend option that version-compatible plans need."""
    if not any(repository.glob(f"*/*/{VERSION_FILE}")):
        return []
    try:
        compatible = check_plan_versions(repository, server_version)
    except TensorRTVersionError as e:
        raise ServeError(str(e)) from None
    return [TENSORRT_BACKEND_CONFIG] if compatible else []


# Exec'd in front of tritonserver: Linux's parent-death signal makes the server get SIGTERM when the
# process that started it dies without stopping it (kill -9, the OOM killer), so no server is left
# holding its ports and GPU memory. It survives exec; preexec_fn would do the same but is unsafe with
# threads. The check of the parent pid closes the race of a parent that died before the prctl.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
    "os.getppid() == int(sys.argv[1]) or sys.exit(1); os.execv(sys.argv[2], sys.argv[2:])"
)
# The kernel sends that signal when the *thread* that forked the server ends, not only the process:
# every server is forked from this one thread, which lives as long as the process.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmembed-spawner")


class TritonServer:
    """A running tritonserver; use as a context manager, or call start() and stop().

    The server also stops if this process dies without stopping it (see _DIE_WITH_PARENT).
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self._stubs: dict[int, str] = {}  # the stub processes alive when the server became ready -> model
        self._prober: Prober | None = None
        self.gate_reports: list[GateReport] = []  # the load gate's result at the last start
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.log_file = settings.log_file
        self._server_id = f"mmembed-{secrets.token_hex(8)}"
        self._admin_key = secrets.token_hex(16)  # the model repository's protocol: this process only

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.settings.grpc_port}"

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            raise ServeError("this tritonserver is already running; stop() it first")
        repository = self.settings.repository
        if not repository.is_dir():
            raise ServeError(f"model repository {repository} does not exist")
        backend_flags = tensorrt_flags(repository, server_tensorrt_version())
        settings = self.settings
        check_ports_free({"gRPC": settings.grpc_port, "HTTP": settings.http_port, "metrics": settings.metrics_port})
        install = find_tritonserver()
        self._workdir = tempfile.TemporaryDirectory(prefix="mmembed-serve-")
        workdir = Path(self._workdir.name)
        if self.log_file is None:  # kept after stop, so a failure's full log can still be read
            handle, name = tempfile.mkstemp(prefix="mmembed-tritonserver-", suffix=".log")
            os.close(handle)
            self.log_file = Path(name)
        command = [
            str(install.binary),
            f"--model-repository={repository.resolve()}",
            f"--grpc-port={self.settings.grpc_port}",
            f"--http-port={self.settings.http_port}",
            f"--metrics-port={self.settings.metrics_port}",
            f"--id={self._server_id}",  # every readiness probe checks it is talking to this process
            "--strict-readiness=true",
            "--exit-on-error=true",
            # Every model at start, as without model control; explicit control lets one broken model be
            # reloaded alone (recover_models) while the others serve on.
            "--model-control-mode=explicit",
            "--load-model=*",
            *_restrictions(self.settings.api_key, self._admin_key),
            *cuda_memory_pool_flags(visible_gpu_count(), self.settings.cuda_memory_pool_mb),
            *backend_flags,
        ]
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            command += [
                "--grpc-use-ssl=true",
                f"--grpc-server-cert={self.settings.tls_cert.resolve()}",
                f"--grpc-server-key={self.settings.tls_key.resolve()}",
            ]
        if install.backend_dir is not None:
            command.append(f"--backend-directory={_prepare_wheel_backends(install, workdir)}")
        with open(self.log_file, "wb") as log:
            self._process = _SPAWNER.submit(
                subprocess.Popen,
                [sys.executable, "-I", "-c", _DIE_WITH_PARENT, str(os.getpid()), *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_stub_environment(install, self.settings.stub_python),
                start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
                cwd=workdir,  # not the caller's: a source tree there would be importable by the stubs
            ).result()
        try:
            self._wait_until_ready()
            self.gate_reports = self._check_served_embeddings()
        except BaseException:
            self.stop()
            raise
        self._stubs = self.stub_models()
        self._start_prober()

    def _start_prober(self) -> None:
        ensembles = {name: sorted(reference.inputs) for name, reference in references(self.settings.repository).items()}
        self._prober = Prober(self.settings.http_port, ensembles, self.settings.api_key, self.settings.wedge_timeout_s)

    def _http(self, path: str, body: bytes | None = None, timeout_s: float = 10.0) -> Any:
        """One request to the server's HTTP endpoint (its own probes: independent of gRPC's TLS)."""
        headers = {ADMIN_KEY_HEADER: self._admin_key}
        if self.settings.api_key:
            headers[API_KEY_HEADER] = self.settings.api_key
        request = urllib.request.Request(f"http://localhost:{self.settings.http_port}{path}", body, headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"null")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServeError(self._failure_message(f"tritonserver exited with code {self._process.returncode}"))
            try:
                self._http("/v2/health/ready")  # 200 only when every model is ready (strict readiness)
            except OSError:  # not listening yet, or not ready
                time.sleep(0.25)
                continue
            answered_by = self._http("/v2").get("name")
            if answered_by != self._server_id:
                raise ServeError(
                    f"HTTP port {self.settings.http_port} is answered by another server ({answered_by!r}), "
                    "not the tritonserver started here: pick another port"
                )
            return
        raise ServeError(self._failure_message(f"not ready after {self.settings.startup_timeout_s:.0f} s"))

    def _check_served_embeddings(self) -> list[GateReport]:
        """The load gate (`mmembed.serving.load_gate`): every model still gives its export's fp32 embeddings."""
        try:
            return check_repository(self.settings.repository, self.settings.http_port, self.settings.api_key)
        except PrecisionGateError as e:
            raise ServeError(f"refusing to serve: {e}\n(full log: {self.log_file})") from None
        except urllib.error.HTTPError as e:
            answer = e.read().decode(errors="replace")
            raise ServeError(self._failure_message(f"the load gate's request failed: {answer}")) from None

    def _failure_message(self, headline: str) -> str:
        """HEADLINE plus the models that failed to load and why, read from the server log."""
        log = self.log_file.read_text(errors="replace") if self.log_file and self.log_file.exists() else ""
        failures = [m.group(1) for m in re.finditer(r"failed to load (.*)", log)]
        detail = "\n".join(f"  {line.strip()}" for line in failures) or "\n".join(log.splitlines()[-15:])
        return f"{headline}\n{detail}\n(full log: {self.log_file})"

    def ready_models(self) -> list[str]:
        """The ready models' names, ensembles (the models with a gate reference) first."""
        index = self._http("/v2/repository/index", b"{}")
        names = [m["name"] for m in index if m.get("state") == "READY"]
        ensembles = references(self.settings.repository)
        return sorted(names, key=lambda n: (n not in ensembles, n))

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the server to shut down (SIGTERM), kill it if it has not after TIMEOUT_S, and then kill
        whatever is left of its process group: stubs whose server died stay alive otherwise."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout_s)
            with contextlib.suppress(ProcessLookupError):  # its own session: the server and its stubs
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            wait_for_group_exit(process.pid)
        self._stubs = {}
        self._prober = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def stub_pids(self) -> set[int]:
        """The server's live Python-backend stub processes (read from /proc)."""
        return set(self.stub_models())

    def stub_models(self) -> dict[int, str]:
        """The server's live Python-backend stub processes, with the model each serves (its command line
        names the model's model.py: REPOSITORY/MODEL/VERSION/model.py)."""
        if self._process is None:
            return {}
        stubs = {}
        for pid in children(self._process.pid):
            arguments = cmdline(pid).split(b"\0")
            if b"triton_python_backend_stub" in arguments[0] and len(arguments) > 1:
                stubs[pid] = Path(arguments[1].decode(errors="replace")).parent.parent.name
        return stubs

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def problem(self) -> str | None:
        """Why the server cannot serve every model now, or None. Triton restarts neither a crashed stub
        nor keeps its readiness honest (its model stays "ready" while every request to it fails), so this
        looks for itself: the server must be alive, every stub it started at load still there, and every
        ensemble must answer a probe within wedge_timeout_s (a hung stub answers nothing)."""
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            return f"tritonserver is not running (exit code {code})"
        missing = set(self._stubs) - self.stub_pids()
        if missing:
            return f"{len(missing)} Python-backend stub process(es) died (pid {', '.join(map(str, sorted(missing)))})"
        failing = self._prober.failing() if self._prober is not None else {}
        if failing:
            return "; ".join(f"{ensemble}: {reason}" for ensemble, reason in failing.items())
        return None

    def broken_models(self) -> dict[str, str]:
        """The models that cannot serve now, with why: those whose stub died, the stub a failing probe's
        answer names, or, for an ensemble whose probe goes unanswered (a hung stub), each Python model of
        that ensemble. Empty when nothing is wrong or the server itself is down (see problem())."""
        if not self.running():
            return {}
        alive = self.stub_pids()
        broken = {
            model: "its Python-backend stub process died" for pid, model in self._stubs.items() if pid not in alive
        }
        for ensemble, reason in (self._prober.failing() if self._prober is not None else {}).items():
            named = re.search(r"Stub process '(.+)_\d+_\d+' is not healthy", reason)
            for model in [named.group(1)] if named else self._python_steps(ensemble):
                broken.setdefault(model, f"{ensemble}: {reason}")
        return dict(sorted(broken.items()))

    def _python_steps(self, ensemble: str) -> list[str]:
        """The composing models of ENSEMBLE that run in stubs (all but the ensemble's own scheduling)."""
        config = self._http(f"/v2/models/{ensemble}/config")
        steps = [step["model_name"] for step in config.get("ensemble_scheduling", {}).get("step", [])]
        return sorted({step for step in steps if step in set(self._stubs.values())})

    def recover_models(self, models: Iterable[str]) -> float:
        """Reload MODELS alone while every other model serves on: end their stubs (a hung one would hold
        the unload up), unload, load (a load of a loaded model is a no-op in Triton); returns the seconds
        until the server is ready again. Requests to these models meanwhile fail with a "not healthy" or
        "not ready" answer, which the client retries."""
        started = time.monotonic()
        models = list(models)
        for pid, model in self.stub_models().items():
            if model in models:  # a hung (or stopped) stub would hold the unload up: end it first
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for model in models:
            self._http(f"/v2/repository/models/{model}/unload", b"{}", self.settings.startup_timeout_s)
            self._http(f"/v2/repository/models/{model}/load", b"{}", self.settings.startup_timeout_s)
        self._wait_until_ready()
        self._stubs = self.stub_models()
        self._start_prober()  # forget the probes' verdicts on the old stubs
        return time.monotonic() - started

    def recover(self, stop_timeout_s: float = 5.0) -> float:
        """Restart the server in place (same ports); returns the seconds it took until ready again.

        A server with a dead stub can wait out its whole graceful-shutdown timeout on it, so this one
        gives it STOP_TIMEOUT_S before killing it: requests in flight fail either way."""
        started = time.monotonic()
        self.stop(stop_timeout_s)
        self.start()
        return time.monotonic() - started

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
