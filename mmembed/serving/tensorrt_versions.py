"""Which TensorRT built a plan, which one the server has, and whether the plan may be served there.

TensorRT documents that a plan runs only on the exact TensorRT version that built it, unless it was built
version-compatible (`BuilderFlag.VERSION_COMPATIBLE`), which runs on that version and later ones, with
Triton's TensorRT backend started with `version-compatible=true`. Export records the version beside each
plan (`tensorrt_version.txt`: "10.8.0.43", or "10.8.0.43 version-compatible"), and `mmembed serve` checks
every plan against the server's TensorRT before it starts: a plan is never served by another TensorRT.

No torch or TensorRT import here: `mmembed serve` runs this before starting tritonserver, in containers
that have neither the export tools nor, often, TensorRT's Python package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VERSION_FILE = "tensorrt_version.txt"  # beside each model.plan, written when the plan is built
VERSION_COMPATIBLE = "version-compatible"
# Triton's TensorRT backend option that lets version-compatible plans run (its lean runtime inside the plan).
BACKEND_CONFIG = "--backend-config=tensorrt,version-compatible=true"
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib")


class TensorRTVersionError(RuntimeError):
    """A plan would be served by a TensorRT it may not run on."""


@dataclass(frozen=True)
class PlanVersion:
    version: str  # the building TensorRT's version, e.g. 10.8.0.43
    compatible: bool = False  # built version-compatible: runs on this version and later ones

    def line(self) -> str:
        return f"{self.version} {VERSION_COMPATIBLE}" if self.compatible else self.version

    @classmethod
    def parse(cls, line: str) -> PlanVersion:
        version, _, flag = line.strip().partition(" ")
        return cls(version, flag.strip() == VERSION_COMPATIBLE)

    def runs_on(self, server_version: str) -> bool:
        """Whether a server with SERVER_VERSION may run this plan. Versions are compared on the parts both
        name: the library files say 10.8.0 where the Python package says 10.8.0.43."""
        built, server = _parts(self.version), _parts(server_version)
        common = min(len(built), len(server))
        if self.compatible:
            return server[:common] >= built[:common]
        return server[:common] == built[:common]


def check_plan_versions(repository: Path, server_version: str | None) -> bool:
    """Raise TensorRTVersionError, naming the model, unless every plan in REPOSITORY may run on the
    server's TensorRT (SERVER_VERSION; None: not found). Returns whether a plan needs BACKEND_CONFIG."""
    plans = {
        recorded.parent.parent.name: PlanVersion.parse(recorded.read_text())
        for recorded in sorted(repository.glob(f"*/*/{VERSION_FILE}"))
    }
    if plans and server_version is None:
        model, plan = next(iter(plans.items()))
        raise TensorRTVersionError(
            f"{model}: its TensorRT plan was built with TensorRT {plan.version}, and this server's TensorRT version "
            "cannot be found (no tensorrt package, no libnvinfer.so.X.Y.Z): serve it in the container that built it"
        )
    for model, plan in plans.items():
        assert server_version is not None
        if not plan.runs_on(server_version):
            rule = "that version or a later one" if plan.compatible else "exactly that version"
            raise TensorRTVersionError(
                f"{model}: its TensorRT plan was built with TensorRT {plan.line()}, which runs on {rule}; this "
                f"server has {server_version}. Rebuild it here (mmembed export --runtime tensorrt ...), or build "
                "it with --tensorrt-version-compatible to serve it on later TensorRT versions"
            )
    return any(plan.compatible for plan in plans.values())


def server_tensorrt_version(library_dirs: tuple[str, ...] = _LIBRARY_DIRS) -> str | None:
    """The TensorRT version beside this server: the Python package, else the newest libnvinfer.so.X.Y.Z."""
    try:
        import tensorrt as trt

        return str(trt.__version__)
    except ImportError:
        pass
    versions = [
        path.name.removeprefix("libnvinfer.so.")
        for folder in library_dirs
        for path in Path(folder).glob("libnvinfer.so.*.*")
    ]
    return max(versions, key=_parts, default=None)


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())
