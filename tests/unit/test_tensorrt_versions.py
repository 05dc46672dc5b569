"""TensorRT plans run only on the exact TensorRT that built them, or, built version-compatible, on that one
and later ones: serve checks every plan before starting, and never serves one on another TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmembed.serving.server import ServeError, ServerSettings, TritonServer, tensorrt_flags
from mmembed.serving.tensorrt_versions import (
    VERSION_COMPATIBLE,
    VERSION_FILE,
    PlanVersion,
    TensorRTVersionError,
    check_plan_versions,
    server_tensorrt_version,
)


def repository_with_plans(root: Path, versions: dict[str, str]) -> Path:
    for model, version in versions.items():
        folder = root / model / "1"
        folder.mkdir(parents=True)
        (folder / "model.plan").write_bytes(b"plan")
        (folder / VERSION_FILE).write_text(version + "\n")
    return root


def test_a_plan_runs_only_on_the_exact_tensorrt_that_built_it(tmp_path: Path) -> None:
    repository = repository_with_plans(tmp_path, {"m_vision_encoder": "10.8.0.43", "m_text_encoder": "10.8.0.43"})
    assert check_plan_versions(repository, "10.8.0.43") is False  # nothing needs the version-compatible mode
    assert check_plan_versions(repository, "10.8.0") is False  # the library files name three parts
    for other in ("10.8.1", "10.8.0.44", "10.3.0", "11.0.0"):  # a patch release too: TensorRT says exact
        with pytest.raises(
            TensorRTVersionError, match=r"m_text_encoder: .* TensorRT 10\.8\.0\.43, which runs on exactly"
        ):
            check_plan_versions(repository, other)
    with pytest.raises(TensorRTVersionError, match=r"this server's TensorRT version cannot be found"):
        check_plan_versions(repository, None)
    assert check_plan_versions(tmp_path / "no-plans", None) is False


def test_a_version_compatible_plan_runs_on_later_tensorrt_and_asks_for_the_backend_mode(tmp_path: Path) -> None:
    repository = repository_with_plans(tmp_path, {"m_vision_encoder": f"10.8.0.43 {VERSION_COMPATIBLE}"})
    for later in ("10.8.0.43", "10.8.1", "10.13.2", "11.1.0"):
        assert check_plan_versions(repository, later) is True
    with pytest.raises(
        TensorRTVersionError, match=r"10\.8\.0\.43 version-compatible, which runs on that version or a later"
    ):
        check_plan_versions(repository, "10.3.0")
    assert PlanVersion.parse(f"10.8.0.43 {VERSION_COMPATIBLE}\n") == PlanVersion("10.8.0.43", compatible=True)
    assert PlanVersion.parse("10.8.0.43\n").line() == "10.8.0.43"


def test_serve_refuses_a_mismatched_plan_before_starting_and_passes_the_backend_mode(tmp_path: Path) -> None:
    exact = repository_with_plans(tmp_path / "exact", {"m_vision_encoder": "10.8.0.43"})
    compatible = repository_with_plans(tmp_path / "compatible", {"m_vision_encoder": f"10.8.0.43 {VERSION_COMPATIBLE}"})
    assert tensorrt_flags(exact, "10.8.0.43") == []
    assert tensorrt_flags(compatible, "10.9.0") == ["--backend-config=tensorrt,version-compatible=true"]
    assert tensorrt_flags(tmp_path / "exact" / "m_vision_encoder", None) == []  # no plans, no question
    with pytest.raises(ServeError, match=r"m_vision_encoder: .* TensorRT 10\.8\.0\.43, which runs on exactly"):
        tensorrt_flags(exact, "10.9.0")
    if server_tensorrt_version() is not None:
        return
    # The server itself, with this machine's TensorRT (none: a plan cannot be served here at all).
    with pytest.raises(ServeError, match=r"m_vision_encoder: .* 10\.8\.0\.43, and this server's TensorRT version"):
        TritonServer(ServerSettings.on_free_ports(exact)).start()


def test_server_version_from_the_library_files(tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("the TensorRT Python package answers first here")
    for name in ("libnvinfer.so.10", "libnvinfer.so.10.3.0", "libnvinfer.so.10.11.0", "libnvinfer.so.9.2.0"):
        (tmp_path / name).write_bytes(b"")
    assert server_tensorrt_version((str(tmp_path),)) == "10.11.0"
    assert server_tensorrt_version((str(tmp_path / "none"),)) is None
