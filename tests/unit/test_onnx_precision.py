"""fp16 and fp8 graphs for strongly typed TensorRT builds: checked on the CPU with onnxruntime, as the export
checks them before any engine is built (no TensorRT here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from mmembed.core.contract import EncoderSpec, ModelFamily
from mmembed.core.numeric_gate import PrecisionGateError
from mmembed.export.onnx_graph import check_parity, export_encoder
from mmembed.export.onnx_precision import (
    E4M3_MAX,
    PrecisionRewriteError,
    ScopedProducts,
    activation_ranges,
    module_path,
    reduce_precision,
    scoped_products,
)
from mmembed.export.samples import encoder_inputs, sample_items
from mmembed.families import get_family


def _encoder(family: ModelFamily, checkpoint: Path, modality: str) -> tuple[torch.nn.Module, EncoderSpec]:
    name = "vision" if modality == "image" else "text"
    return family.load_encoders(checkpoint)[name], family.describe(checkpoint).encoder(name)


def _real_inputs(family: ModelFamily, checkpoint: Path, modality: str, first_seed: int = 0) -> dict[str, np.ndarray]:
    """Photo-like JPEGs or the sample captions through the served preprocessing, as export gates with."""
    (ensemble,) = [e for e in family.describe(checkpoint).ensembles if e.modality == modality]
    return encoder_inputs(ensemble, sample_items(ensemble, first_seed), checkpoint)


def _checkpoint(request: pytest.FixtureRequest, family: str) -> Path:
    return Path(request.getfixturevalue("checkpoint" if family == "siglip2" else "jina_checkpoint"))


@pytest.mark.parametrize("precision", ["fp16", "fp8"])
@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("family_name", ["siglip2", "jinaclip2"])
def test_typed_graph_passes_its_gate_on_random_and_real_inputs(
    family_name: str, modality: str, precision: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    family, checkpoint = get_family(family_name), _checkpoint(request, family_name)
    tower, spec = _encoder(family, checkpoint, modality)
    graph = export_encoder(tower, spec, tmp_path)
    before = scoped_products(onnx.load(str(graph)).graph, spec.precision_scope)
    fp32_weights = {node.input[1] for node in before.with_weight}
    calibration = [spec.random_inputs(8, seed=99), _real_inputs(family, checkpoint, modality, 100)]
    changed = reduce_precision(graph, precision, spec.precision_scope, calibration)
    assert changed == len(before.with_weight) + len(before.between_activations) >= 12  # 2 layers x 6+

    real = _real_inputs(family, checkpoint, modality)
    report = check_parity(tower, spec, graph, name=modality, precision=precision, real_inputs=real)
    assert report.min_cosine >= 0.99 if precision == "fp8" else report.min_cosine >= 0.999
    model = onnx.load(str(graph))
    stored = {t.name: t.data_type for t in model.graph.initializer}
    assert not fp32_weights & stored.keys()  # no fp32 copy of a converted weight is left behind
    low = onnx.TensorProto.FLOAT8E4M3FN if precision == "fp8" else onnx.TensorProto.FLOAT16
    assert {stored[f"{name}_e4m3" if precision == "fp8" else f"{name}_fp16"] for name in fp32_weights} == {low}


def test_fp8_graph_quantises_block_products_and_keeps_the_rest_in_fp32(checkpoint: Path, tmp_path: Path) -> None:
    family = get_family("siglip2")
    tower, spec = _encoder(family, checkpoint, "image")
    graph = export_encoder(tower, spec, tmp_path)
    scoped = scoped_products(onnx.load(str(graph)).graph, spec.precision_scope)
    reduce_precision(graph, "fp8", spec.precision_scope, [spec.random_inputs(4, seed=99)])
    model = onnx.load(str(graph), load_external_data=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    producers = {output: node for node in model.graph.node for output in node.output}
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    by_name = {node.name: node for node in model.graph.node}
    products = ScopedProducts(
        with_weight=[by_name[node.name] for node in scoped.with_weight],
        between_activations=[by_name[node.name] for node in scoped.between_activations],
    )
    for node in products.with_weight:  # e4m3 weight, e4m3 activation, both dequantised right before
        activation, weight = (producers[name] for name in node.input)
        assert activation.op_type == weight.op_type == "DequantizeLinear"
        assert producers[activation.input[0]].op_type == "QuantizeLinear"
        assert weights[weight.input[0]].data_type == onnx.TensorProto.FLOAT8E4M3FN
    for node in products.between_activations:  # attention's products: fp16 in, fp32 out
        assert {producers[name].op_type for name in node.input} == {"Cast"}
    untouched = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv", "LayerNormalization")]
    untouched = [n for n in untouched if n not in products.with_weight + products.between_activations]
    assert {module_path(n.name).split(".")[2] for n in untouched} >= {"embeddings", "head", "post_layernorm"}
    for node in untouched:  # patch embedding, norms and pooling head: fp32 weights, fp32 inputs
        assert all(weights[name].data_type == onnx.TensorProto.FLOAT for name in node.input if name in weights)
        converted = [name for name in node.input if name.endswith(("_fp8", "_fp16"))]
        assert not converted, f"{node.name} reads {converted}"


def test_activation_ranges_are_the_largest_inputs_torch_feeds_each_layer(checkpoint: Path, tmp_path: Path) -> None:
    family = get_family("siglip2")
    tower, spec = _encoder(family, checkpoint, "text")
    graph = export_encoder(tower, spec, tmp_path)
    products = scoped_products(onnx.load(str(graph)).graph, spec.precision_scope).with_weight
    inputs = spec.random_inputs(6, seed=7)
    ranges = activation_ranges(graph, sorted({node.input[0] for node in products}), [inputs])

    seen: dict[str, float] = {}
    linears = {name: m for name, m in tower.named_modules() if isinstance(m, torch.nn.Linear)}
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: seen.update({name: float(args[0].abs().max())}))
        for name, module in linears.items()
    ]
    with torch.no_grad():
        tower(torch.from_numpy(inputs["input_ids"]))
    for hook in hooks:
        hook.remove()
    for node in products:
        (name,) = [n for n in seen if ("." + n).endswith(module_path(node.name))]
        assert ranges[node.input[0]] == pytest.approx(seen[name], rel=1e-4)


def test_a_miscalibrated_fp8_graph_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    """Activation scales 100x too small saturate e4m3: the gate must see it, whatever the calibration did."""
    family = get_family("siglip2")
    tower, spec = _encoder(family, checkpoint, "image")
    graph = export_encoder(tower, spec, tmp_path)
    reduce_precision(graph, "fp8", spec.precision_scope, [spec.random_inputs(4, seed=99)])
    model = onnx.load(str(graph), load_external_data=True)
    quantized = {node.input[1] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    for tensor in model.graph.initializer:
        if tensor.name in quantized:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) / np.float32(100), tensor.name))
    onnx.save(model, str(graph), save_as_external_data=True, location="miscalibrated.data")
    with pytest.raises(PrecisionGateError, match=r"image fp8: .* \(gate 0\.99\): under the gate"):
        check_parity(tower, spec, graph, name="image", precision="fp8")


def test_weights_are_scaled_to_the_e4m3_range(checkpoint: Path, tmp_path: Path) -> None:
    family = get_family("siglip2")
    tower, spec = _encoder(family, checkpoint, "image")
    graph = export_encoder(tower, spec, tmp_path)
    fp32 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(graph), load_external_data=True).graph.initializer}
    reduce_precision(graph, "fp8", spec.precision_scope, [spec.random_inputs(4, seed=99)])
    model = onnx.load(str(graph), load_external_data=True)
    values = {t.name: t for t in model.graph.initializer}
    checked = 0
    for node in (n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("_e4m3")):
        stored = values.get(node.input[0])
        if stored is None:  # an activation's pair: its scale is the calibration's, tested above
            continue
        checked += 1
        codes = torch.frombuffer(bytearray(stored.raw_data), dtype=torch.uint8).view(torch.float8_e4m3fn).float()
        scale = float(numpy_helper.to_array(values[node.input[1]]))
        original = fp32[node.input[0].removesuffix("_e4m3")]
        assert float(codes.abs().max()) == E4M3_MAX  # the largest weight lands on e4m3's largest value
        restored = (codes * scale).reshape(original.shape).numpy()
        assert np.abs(restored - original).max() <= np.abs(original).max() / 16  # 3 mantissa bits
    assert checked == 12  # 2 layers x (q, k, v, out, fc1, fc2)


def test_a_scope_that_matches_nothing_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    tower, spec = _encoder(get_family("siglip2"), checkpoint, "image")
    graph = export_encoder(tower, spec, tmp_path)
    with pytest.raises(PrecisionRewriteError, match="no matrix product of this graph lies in the family's scope"):
        reduce_precision(graph, "fp16", r"\.blocks\.", [])
    with pytest.raises(PrecisionRewriteError, match="fp16 or fp8, not bf16"):
        reduce_precision(graph, "bf16", r"\.encoder\.layers\.\d+\.", [])
