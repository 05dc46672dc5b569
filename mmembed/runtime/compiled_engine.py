"""An encoder compiled ahead of time (AOTInductor): built by export on the machine that will serve it,
loaded by the torch runtime in seconds, without compiling.

The package holds the fused kernels only. The weights come from the encoder folder, converted to the
served precision at load, so the repository does not hold them twice. A package runs only where it was
built: the same torch build on the same kind of device (the CPU, or a GPU of the same name and compute
capability). Anywhere else it is refused with a message that says how to rebuild it, never loaded.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mmembed.core.contract import EncoderSpec

ENGINE_FOLDER = "compiled"  # beside the encoder folder, in the model's version folder
PACKAGE_FILE = "encoder.pt2"
BUILD_FILE = "build.json"


class EngineMismatchError(RuntimeError):
    """A compiled encoder was built by another torch or for another device than the one loading it."""


@dataclass(frozen=True, kw_only=True)
class BuildTarget:
    """What a compiled package is bound to."""

    torch_version: str  # the exact build, e.g. 2.11.0+cu130: kernels and the package format change between builds
    device: str  # "cpu (x86_64)", or the GPU's name and compute capability

    @classmethod
    def of(cls, device: torch.device) -> BuildTarget:
        if device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            name = f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
        else:
            name = f"cpu ({platform.machine()})"
        return cls(torch_version=torch.__version__, device=name)


@dataclass(frozen=True, kw_only=True)
class EngineBuild:
    """How a package was built: for the load check, and for the benchmark's report."""

    target: BuildTarget
    precision: str
    seconds: float  # compile time at export
    bytes: int  # the package's size

    def save(self, folder: Path) -> None:
        (folder / BUILD_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> EngineBuild:
        fields = json.loads((folder / BUILD_FILE).read_text())
        return cls(**{**fields, "target": BuildTarget(**fields["target"])})


class CompiledModule(torch.nn.Module):
    """A loaded package, called like the module it was compiled from."""

    def __init__(self, runner: object) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.runner(*inputs)  # type: ignore[operator]
        return output


def compile_engine(
    module: torch.nn.Module, spec: EncoderSpec, precision: str, max_batch_size: int, folder: Path
) -> EngineBuild:
    """Compile MODULE (already in the served precision, on its device) for any batch up to MAX_BATCH_SIZE
    and the varying token lengths SPEC declares; write the package, without weights, into FOLDER."""
    device = next(module.parameters()).device
    example = spec.random_inputs(2, seed=0)  # 2: torch.export specialises a dimension it sees as 1
    inputs = tuple(torch.from_numpy(example[item.name]).to(device) for item in spec.inputs)
    inputs = tuple(x.to(next(module.parameters()).dtype) if x.is_floating_point() else x for x in inputs)
    dims = {"batch": torch.export.Dim("batch", min=1, max=max_batch_size)}
    shapes = []
    for item in spec.inputs:
        axes = {0: dims["batch"]}
        for axis, name in item.dynamic_axes:
            dims.setdefault(name, torch.export.Dim(name, min=1, max=item.item_shape[axis]))
            axes[axis + 1] = dims[name]
        shapes.append(axes)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with torch.inference_mode():
        program = torch.export.export(module, inputs, dynamic_shapes=tuple(shapes))
    package = folder / PACKAGE_FILE
    torch._inductor.aoti_compile_and_package(
        program,
        package_path=str(package),
        inductor_configs={"aot_inductor.package_constants_in_so": False},  # weights: from the encoder folder
    )
    build = EngineBuild(
        target=BuildTarget.of(device),
        precision=precision,
        seconds=round(time.monotonic() - started, 1),
        bytes=package.stat().st_size,
    )
    build.save(folder)
    return build


def load_engine(module: torch.nn.Module, folder: Path, precision: str) -> CompiledModule:
    """The package in FOLDER, given MODULE's weights (converted to PRECISION, on the serving device).

    Raises EngineMismatchError if it was built by another torch, for another device, or another precision."""
    device = next(module.parameters()).device
    if not (folder / BUILD_FILE).is_file():
        raise EngineMismatchError(f"no compiled encoder in {folder}: export it again with --compile")
    build, here = EngineBuild.load(folder), BuildTarget.of(device)
    if build.target != here or build.precision != precision:
        raise EngineMismatchError(
            f"the compiled encoder in {folder} was built with torch {build.target.torch_version} for "
            f"{build.target.device} in {build.precision}; this is torch {here.torch_version} on {here.device} in "
            f"{precision}. Compiled kernels run only where they were built: export again with --compile on "
            "this machine, or without --compile"
        )
    index = (device.index or 0) if device.type == "cuda" else -1
    runner = torch._inductor.aoti_load_package(str(folder / PACKAGE_FILE), device_index=index)
    weights = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    runner.load_constants(
        {name: weights[name] for name in runner.get_constant_fqns()}, check_full_update=True, user_managed=True
    )
    return CompiledModule(runner)
