"""TensorRT plans only load on the TensorRT they were built with: serve checks before starting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmembed.serving.tensorrt_versions import (
    VERSION_FILE,
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


def test_same_major_minor_passes_and_another_is_refused(tmp_path: Path) -> None:
    repository = repository_with_plans(tmp_path, {"m_vision_encoder": "10.3.0", "m_text_encoder": "10.3.0"})
    check_plan_versions(repository, "10.3.1")  # patch releases load each other's plans
    check_plan_versions(repository, None)  # unknown server version: nothing to compare
    with pytest.raises(TensorRTVersionError, match=r"m_text_encoder: .* built with TensorRT 10\.3\.0, .* has 10\.8\.0"):
        check_plan_versions(repository, "10.8.0")


def test_server_version_from_the_library_files(tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("the TensorRT Python package answers first here")
    for name in ("libnvinfer.so.10", "libnvinfer.so.10.3.0", "libnvinfer.so.10.11.0", "libnvinfer.so.9.2.0"):
        (tmp_path / name).write_bytes(b"")
    assert server_tensorrt_version((str(tmp_path),)) == "10.11.0"
    assert server_tensorrt_version((str(tmp_path / "none"),)) is None
