"""Which TensorRT built a plan, which one the server has, and whether they match.

No torch or TensorRT import here: `mmembed serve` runs this before starting tritonserver, in containers
that have neither the export tools nor, often, TensorRT's Python package.
"""

from __future__ import annotations

from pathlib import Path

VERSION_FILE = "tensorrt_version.txt"  # beside each model.plan, written when the plan is built
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib")


class TensorRTVersionError(RuntimeError):
    """A plan was built with another TensorRT version than the server's: it would not load."""


def check_plan_versions(repository: Path, server_version: str | None) -> None:
    """Raise TensorRTVersionError if a plan in REPOSITORY was built with another TensorRT major.minor
    than SERVER_VERSION (plans do not load across versions); None: the server's version is unknown."""
    if server_version is None:
        return
    for recorded in sorted(repository.glob(f"*/*/{VERSION_FILE}")):
        built = recorded.read_text().strip()
        if built.split(".")[:2] != server_version.split(".")[:2]:
            model = recorded.parent.parent.name
            raise TensorRTVersionError(
                f"{model}: its TensorRT plan was built with TensorRT {built}, this server has {server_version}; "
                f"rebuild it here (mmembed export --runtime tensorrt ...)"
            )


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
    return max(versions, key=lambda v: tuple(int(part) for part in v.split(".") if part.isdigit()), default=None)
