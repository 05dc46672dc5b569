"""The benchmark's result as the Markdown table docs/PERFORMANCE.md records."""

from __future__ import annotations

import math

from mmembed.bench.run import BenchResult


def _rate(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _latency(row: dict[str, object] | None) -> str:
    if not row:
        return "-"
    return " / ".join(f"{float(row[key]):.0f}" for key in ("p50_ms", "p95_ms", "p99_ms"))  # type: ignore[arg-type]


def _mfu(result: BenchResult, images_per_s: float | None, precision: str) -> str:
    peak = result.ceilings_tflops.get("bf16")
    if not peak or not images_per_s or not result.flops_per_image:
        return "-"
    achieved = result.flops_per_image * images_per_s / 1e12
    text = f"{100 * achieved / peak:.0f}% of bf16"
    if precision.startswith("fp8") and result.ceilings_tflops.get("fp8"):
        text += f", {100 * achieved / result.ceilings_tflops['fp8']:.0f}% of fp8"
    return text


def table(result: BenchResult) -> str:
    baseline_images = result.baseline.get("images_per_s")
    lines = [
        f"machine: {result.machine}; date: {result.date}",
        "",
        "| measurement | precision (-aot: compiled) | images/s | texts/s | image p50/p95/p99 ms | text p50/p95/p99 ms "
        "| GPU util | image MFU | images/s vs baseline |",
        "| --- | --- | ---: | ---: | --- | --- | ---: | --- | ---: |",
    ]
    preprocessing = result.config.get("image_preprocess", "pillow")
    served_label = "served end to end (Triton, gRPC)" + (
        f", image preprocessing in {preprocessing}" if preprocessing != "pillow" else ""
    )
    for precision in dict.fromkeys([key.split()[0] for key in result.served] + list(result.encoder)):
        image = result.served.get(f"{precision} image")
        text = result.served.get(f"{precision} text")
        images_per_s = float(image["items_per_s"]) if image else None
        util = [row.get("gpu_util") for row in (image, text) if row and row.get("gpu_util") is not None]
        ratio = f"{images_per_s / baseline_images:.1f}x" if images_per_s and baseline_images else "-"
        lines.append(
            f"| {served_label} | {precision} | {_rate(images_per_s)} "
            f"| {_rate(float(text['items_per_s']) if text else None)} | {_latency(image)} | {_latency(text)} "
            f"| {' / '.join(f'{u:.0f}%' for u in util) or '-'} | {_mfu(result, images_per_s, precision)} | {ratio} |"
        )
    for precision, rates in result.encoder.items():
        image_rate = rates.get("image")
        ratio = f"{image_rate / baseline_images:.1f}x" if image_rate and baseline_images else "-"
        lines.append(
            f"| encoder alone (in process, batch {result.config.get('max_batch_size')} images / "
            f"{result.config.get('text_max_batch_size')} texts) | {precision} | {_rate(image_rate)} "
            f"| {_rate(rates.get('text'))} | - | - | - | {_mfu(result, image_rate, precision)} | {ratio} |"
        )
    if result.baseline:
        lines.append(
            f"| transformers AutoModel + AutoProcessor ({result.baseline['processor']}), batch 128 "
            f"| {result.baseline['dtype']} | {_rate(baseline_images)} | {_rate(result.baseline['texts_per_s'])} "
            f"| - | - | - | {_mfu(result, baseline_images, 'fp16')} | 1.0x |"
        )
    workers = result.config.get("preprocess_instances", "?")
    for mode, rate in result.preprocess.items():
        where = mode if mode.startswith("torch") else f"{workers} processes, {mode}"
        lines.append(f"| image preprocessing alone, {where} | - | {_rate(rate)} |" + " - |" * 6)
    lines.append("")
    if result.ceilings_tflops:
        ceilings = ", ".join(f"{k} {v:,.0f} TFLOP/s" for k, v in result.ceilings_tflops.items())
        lines.append(f"measured matmul ceilings (8192^3, random data): {ceilings}")
    lines.append(
        f"model cost: {result.flops_per_image / 1e12:.3f} TFLOP per image, "
        f"{result.flops_per_text / 1e9:.1f} GFLOP per text (torch FlopCounterMode)"
    )
    for precision, rates in result.encoder.items():
        cosines = [
            f"{rates[f'{m}_min_cosine_vs_fp32']:.5f} ({m})"
            for m in ("image", "text")
            if f"{m}_min_cosine_vs_fp32" in rates
        ]
        lines.append(f"gate {precision} at load, min cosine vs fp32: {', '.join(cosines) or '-'}")
    lines.append(
        f"vs exact Pillow preprocessing, embedding min cosine: fast JPEG {result.fast_jpeg_min_cosine:.5f}, "
        f"torch on the device {result.device_preprocess_min_cosine:.5f}"
    )
    smoke = ", ".join(f"{k} {v:.5f}" if v == v else k for k, v in result.smoke_parity.items())
    lines.append(f"served vs transformers fp32 (tiny checkpoint, this device), min cosine: {smoke or '-'}")
    if result.host_tensors:
        lines.append("NOTE: GPU tensors between ensemble steps failed here; this run handed them over through the host")
    for model, graphs in result.cuda_graphs.items():
        lines.append(f"encoder alone, CUDA graphs of {model}: {graphs}")
    for model, tower in result.towers.items():
        compiled = (
            f"; compiled ahead of time for {tower['compiled_for']} in {tower['compile_s']:.0f} s, "
            f"package {tower['package_bytes'] / 2**20:.1f} MiB (kernels only)"
            if "compile_s" in tower
            else "; not compiled"
        )
        lines.append(f"tower {model}: attention {tower['attention']}{compiled}")
    if result.kernel_shares:
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in result.kernel_shares.items())
        lines.append(f"vision tower GPU time by kernel kind (eager, batch 32): {shares}")
    failures = {key: row["failures"] for key, row in result.served.items() if row.get("failures")}
    lines.append(f"failed requests: {failures or 'none'}")
    for step, error in result.errors.items():
        lines.append(f"FAILED {step}: {error}")
    lines.append("step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings_s.items()))
    return "\n".join(lines)
