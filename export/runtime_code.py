"""Put the mmembed code a Python-backend model runs beside its `model.py`, so the repository serves from a
Python that has only the third-party packages (numpy<2, Pillow, tokenizers, onnxruntime or torch): an
official tritonserver container needs no `mmembed` installed, and the code is versioned with the
repository it was exported with.

Which files: the mmembed modules the model's source imports (anywhere in it: some options import theirs
inside a function), then, transitively, every mmembed module those import at module level, with their
parent packages. Found by reading the sources (ast), not by importing them. Each model's `model.py` puts
its own folder first on `sys.path`, so its copy wins over any installed mmembed.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "mmembed"


def _is_ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _imported(source: Path, *, anywhere: bool) -> set[str]:
    """The mmembed modules SOURCE imports: at module level, or ANYWHERE (functions included). A name
    imported from a package counts too where it is a module (`from mmembed.families import siglip2`)."""
    tree = ast.parse(source.read_text())
    nodes = ast.walk(tree) if anywhere else iter(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if _is_ours(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _is_ours(node.module):
            found.add(node.module)
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if importlib.util.find_spec(node.module) is not None and _module_file(submodule) is not None:
                    found.add(submodule)
    return found


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def runtime_modules(source: Path, extra: Iterable[str] = ()) -> dict[str, Path]:
    """Every mmembed module (by name, with its file) that the model SOURCE, and EXTRA modules it imports
    by name at run time (the torch encoder's family), need. An EXTRA module outside mmembed (a family
    from another package) is not copied, as a part of its package would shadow the rest: the serving
    Python must have that package; the mmembed modules it imports are copied."""
    queue = sorted(_imported(source, anywhere=True))
    for name in extra:
        if _is_ours(name):
            queue.append(name)
        elif (file := _module_file(name)) is not None:
            queue.extend(_imported(file, anywhere=False))
    found: dict[str, Path] = {}
    while queue:
        name = queue.pop()
        if name in found:
            continue
        file = _module_file(name)
        if file is None:
            raise ValueError(f"{source.name} needs {name}, which has no Python source here")
        found[name] = file
        parts = name.split(".")
        queue.extend(".".join(parts[:end]) for end in range(1, len(parts)))  # its parent packages
        queue.extend(_imported(file, anywhere=False) - found.keys())
    return found


def copy_runtime_code(version: Path, source: Path, extra: Iterable[str] = ()) -> list[str]:
    """Copy what SOURCE needs into VERSION, laid out by module name (mmembed/core/names.py, ...); return
    the module names."""
    modules = runtime_modules(source, extra)
    for name, file in modules.items():
        relative = Path(*name.split("."))
        target = version / (relative / "__init__.py" if file.name == "__init__.py" else relative.with_suffix(".py"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return sorted(modules)
