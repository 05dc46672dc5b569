"""Rewrite an fp32 tower graph into the precision a strongly typed TensorRT network is built in.

A strongly typed network (TensorRT 10.12 deprecates, 11 removes, the FP16/FP8 builder flags) computes each
tensor in the type the ONNX graph gives it, so the precision is decided here, layer by layer, and the same
graph can be checked for accuracy on the CPU with onnxruntime before any engine is built:

- fp16: the matrix multiplications inside the transformer blocks (the family's `fp8_scope`: projections,
  MLPs and the two attention products) take fp16 inputs and fp16 weights. The residual stream, LayerNorms,
  softmax, GELU, the patch embedding and the pooling head stay fp32, so an fp16 overflow can only happen
  inside one product, never accumulate along the residual stream (how a SigLIP fp16 engine reached cosine
  0.65 in NVIDIA/TensorRT#4373).
- fp8: as fp16, and the projections and MLPs (matrix products with a weight) take e4m3 operands through
  explicit QuantizeLinear/DequantizeLinear pairs: per-tensor scales, the weight's from its largest
  magnitude, the activation's from the largest magnitude seen on calibration inputs. Inputs past that
  magnitude saturate at e4m3's largest value instead of overflowing.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from mmembed.export.onnx_graph import DATA_FILE

E4M3_MAX = 448.0  # e4m3's largest finite magnitude
QDQ_OPSET = 19  # the first opset whose QuantizeLinear/DequantizeLinear take float8 types
CALIBRATION_BATCH = 4  # inputs per onnxruntime run while collecting activation ranges


class PrecisionRewriteError(ValueError):
    """The graph has nothing the requested precision could apply to (a scope that matches no layer)."""


@dataclass(frozen=True)
class ScopedProducts:
    """The MatMul nodes of a graph that run in reduced precision, by kind."""

    with_weight: list[onnx.NodeProto]  # activation x weight initializer: projections, MLPs
    between_activations: list[onnx.NodeProto]  # attention's Q.K^T and P.V


def module_path(node_name: str) -> str:
    """The torch module a node was traced from, as a qualified name with a leading dot.

    The TorchScript exporter names nodes after the module scope: "/encoder/layers.0/mlp/fc1/MatMul"
    comes from module "encoder.layers.0.mlp.fc1", the name the family's `fp8_scope` is written for."""
    scope = node_name.strip("/").rpartition("/")[0]
    return "." + scope.replace("/", ".")


def scoped_products(graph: onnx.GraphProto, scope: str) -> ScopedProducts:
    """The MatMul nodes of GRAPH whose module path matches the regex SCOPE."""
    pattern = re.compile(scope)
    weights = {tensor.name for tensor in graph.initializer}
    with_weight: list[onnx.NodeProto] = []
    between: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "MatMul" or not pattern.search(module_path(node.name)):
            continue
        (with_weight if node.input[1] in weights else between).append(node)
    if not with_weight:
        raise PrecisionRewriteError(f"no matrix product of this graph lies in the family's scope {scope!r}")
    return ScopedProducts(with_weight=with_weight, between_activations=between)


def reduce_precision(graph_path: Path, precision: str, scope: str, calibration: Iterable[dict[str, np.ndarray]]) -> int:
    """Rewrite the fp32 graph at GRAPH_PATH (and its external data) in place into PRECISION ("fp16" or
    "fp8"); return how many matrix products changed. CALIBRATION (batches of named inputs) sets fp8's activation
    scales and is not read for fp16."""
    if precision not in ("fp16", "fp8"):
        raise PrecisionRewriteError(f"a typed graph is written in fp16 or fp8, not {precision}")
    model = onnx.load(str(graph_path), load_external_data=True)
    products = scoped_products(model.graph, scope)
    rewrite = _Rewrite(model.graph)
    for node in products.between_activations:
        rewrite.in_fp16(node)
    if precision == "fp16":
        for node in products.with_weight:
            rewrite.in_fp16(node)
    else:
        activations = sorted({node.input[0] for node in products.with_weight})
        ranges = activation_ranges(graph_path, activations, calibration)
        for node in products.with_weight:
            rewrite.in_fp8(node, ranges[node.input[0]])
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, QDQ_OPSET)
    rewrite.finish()
    graph_path.with_name(DATA_FILE).unlink(missing_ok=True)
    onnx.save(model, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA_FILE)
    onnx.checker.check_model(str(graph_path))
    return len(products.with_weight) + len(products.between_activations)


def activation_ranges(
    graph_path: Path, tensors: list[str], batches: Iterable[dict[str, np.ndarray]]
) -> dict[str, float]:
    """The largest magnitude each named fp32 tensor of the graph takes over the input BATCHES, from
    onnxruntime runs of a copy of the graph that also outputs those tensors."""
    import onnxruntime

    model = onnx.load(str(graph_path), load_external_data=True)
    known = {output.name for output in model.graph.output}
    for name in tensors:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    ranges = dict.fromkeys(tensors, 0.0)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / graph_path.name
        onnx.save(model, str(copy), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA_FILE)
        del model
        session = onnxruntime.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
        for batch in batches:
            count = len(next(iter(batch.values())))
            for start in range(0, count, CALIBRATION_BATCH):
                feeds = {name: array[start : start + CALIBRATION_BATCH] for name, array in batch.items()}
                values = session.run(tensors, feeds)
                for name, value in zip(tensors, values, strict=True):
                    ranges[name] = max(ranges[name], float(np.abs(value).max()))
    return ranges


class _Rewrite:
    """The nodes and initializers one rewrite adds. Each tensor is converted once, however many
    products read it (q, k and v share one quantised LayerNorm output)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.converted: dict[tuple[str, str], str] = {}  # (tensor, form) -> converted tensor
        self.converters: dict[str, list[onnx.NodeProto]] = {}  # converted tensor -> nodes computing it
        self.after: dict[str, onnx.NodeProto] = {}  # product output -> its cast back to fp32

    def in_fp16(self, node: onnx.NodeProto) -> None:
        """NODE multiplies fp16 operands and hands back fp32."""
        for position, name in enumerate(node.input):
            node.input[position] = self._weight_fp16(name) if name in self.initializers else self._cast_fp16(name)
        (output,) = node.output
        node.output[0] = f"{output}_fp16"
        self.after[node.output[0]] = onnx.helper.make_node(
            "Cast", [node.output[0]], [output], to=onnx.TensorProto.FLOAT
        )

    def in_fp8(self, node: onnx.NodeProto, activation_range: float) -> None:
        """NODE multiplies e4m3 operands, dequantised to fp32 in the graph; TensorRT fuses the pairs into
        an fp8 product."""
        activation, weight = node.input
        node.input[0] = self._activation_fp8(activation, activation_range)
        node.input[1] = self._weight_fp8(weight)

    def finish(self) -> None:
        """Put each converter just before its first reader and each cast back just after its product:
        the exporter's node order is topological, and stays so."""
        ordered: list[onnx.NodeProto] = []
        placed: set[str] = set()
        for node in self.graph.node:
            for name in node.input:
                if name in self.converters and name not in placed:
                    ordered.extend(self.converters[name])
                    placed.add(name)
            ordered.append(node)
            ordered.extend(self.after[output] for output in node.output if output in self.after)
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        read = {name for node in ordered for name in node.input}
        kept = [tensor for tensor in self.graph.initializer if tensor.name in read]  # the replaced fp32 weights go
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)

    def _convert(self, source: str, form: str, nodes: list[onnx.NodeProto]) -> str:
        output = str(nodes[-1].output[0])
        self.converted[(source, form)] = output
        self.converters[output] = nodes
        return output

    def _cast_fp16(self, name: str) -> str:
        if (name, "fp16") in self.converted:
            return self.converted[(name, "fp16")]
        cast = onnx.helper.make_node("Cast", [name], [f"{name}_fp16"], to=onnx.TensorProto.FLOAT16)
        return self._convert(name, "fp16", [cast])

    def _weight_fp16(self, name: str) -> str:
        if (name, "fp16") not in self.converted:
            weight = numpy_helper.to_array(self.initializers[name]).astype(np.float16)
            self.converted[(name, "fp16")] = self._add_initializer(numpy_helper.from_array(weight, f"{name}_fp16"))
        return self.converted[(name, "fp16")]

    def _activation_fp8(self, name: str, magnitude: float) -> str:
        if (name, "fp8") in self.converted:
            return self.converted[(name, "fp8")]
        scale, zero = self._scale_and_zero(name, magnitude)
        quantize = onnx.helper.make_node("QuantizeLinear", [name, scale, zero], [f"{name}_e4m3"])
        dequantize = onnx.helper.make_node("DequantizeLinear", [f"{name}_e4m3", scale, zero], [f"{name}_fp8"])
        return self._convert(name, "fp8", [quantize, dequantize])

    def _weight_fp8(self, name: str) -> str:
        """The weight stored in e4m3 (a quarter of its fp32 bytes) and dequantised where it is read."""
        if (name, "fp8") in self.converted:
            return self.converted[(name, "fp8")]
        weight = torch.from_numpy(numpy_helper.to_array(self.initializers[name]).copy())
        magnitude = float(weight.abs().max())
        scale, zero = self._scale_and_zero(name, magnitude)
        e4m3 = (weight / _scale(magnitude)).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        stored = onnx.helper.make_tensor(
            f"{name}_e4m3",
            onnx.TensorProto.FLOAT8E4M3FN,
            list(weight.shape),
            e4m3.view(torch.uint8).numpy().tobytes(),
            raw=True,
        )
        self._add_initializer(stored)
        dequantize = onnx.helper.make_node("DequantizeLinear", [stored.name, scale, zero], [f"{name}_fp8"])
        return self._convert(name, "fp8", [dequantize])

    def _scale_and_zero(self, name: str, magnitude: float) -> tuple[str, str]:
        scale = numpy_helper.from_array(np.array(_scale(magnitude), dtype=np.float32), f"{name}_fp8_scale")
        zero = onnx.helper.make_tensor(f"{name}_fp8_zero", onnx.TensorProto.FLOAT8E4M3FN, [], [0])
        return self._add_initializer(scale), self._add_initializer(zero)

    def _add_initializer(self, tensor: onnx.TensorProto) -> str:
        if tensor.name not in self.initializers:
            self.graph.initializer.append(tensor)
            self.initializers[tensor.name] = tensor
        return tensor.name


def _scale(magnitude: float) -> float:
    """The per-tensor scale that maps MAGNITUDE to e4m3's largest value (1 for an all-zero tensor)."""
    return magnitude / E4M3_MAX if magnitude > 0 else 1.0
