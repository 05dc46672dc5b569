"""The layers import only what they need: `import mmembed` leaves the client unloaded, and the models that
run inside tritonserver load none of the client, tritonclient's gRPC stack, export, serving or the CLI.

Each check runs in a fresh interpreter, so nothing this test process already imported can hide a load.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmembed.model_repository import SOURCES

# What no Python-backend process needs: the client and its gRPC stack, export, serving, the CLI, apps.
NOT_IN_THE_SERVER = (
    "mmembed.client",
    "tritonclient",
    "grpc",
    "mmembed.export",
    "mmembed.serving",
    "mmembed.cli",
    "mmembed.loadtest",
    "mmembed.bench",
    "transformers",
)


def loaded_after(statements: str) -> set[str]:
    """The modules a fresh interpreter holds after running STATEMENTS."""
    script = f"import sys, json\n{statements}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def forbidden(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def mmembed_imports(source: Path) -> list[str]:
    """The mmembed modules a Python model's source imports at load (Triton's own utilities are not ours
    to load; imports inside functions serve options that need them, such as torch image preprocessing)."""
    tree = ast.parse(source.read_text())
    return [
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmembed")
    ]


def test_import_mmembed_leaves_the_client_unloaded() -> None:
    modules = loaded_after("import mmembed")
    assert forbidden(modules, ("mmembed.client", "tritonclient", "grpc", "torch")) == []
    assert "mmembed.client" in loaded_after("from mmembed import EmbeddingClient")  # loaded on first use


@pytest.mark.parametrize("model", sorted(p.name for p in SOURCES.glob("*.py") if p.name != "__init__.py"))
def test_models_inside_tritonserver_load_only_core_and_runtime(model: str) -> None:
    imports = mmembed_imports(SOURCES / model)
    assert imports, f"{model} imports nothing from mmembed: the check would prove nothing"
    modules = loaded_after("\n".join(f"import {name}" for name in imports))
    assert forbidden(modules, NOT_IN_THE_SERVER) == []
    if model != "torch_encoder.py":  # preprocessing, onnxruntime and normalisation processes need no torch
        assert forbidden(modules, ("torch",)) == []
