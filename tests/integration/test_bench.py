"""`mmembed bench` end to end on the tiny model and the CPU: every step runs and lands in the table."""

from __future__ import annotations

from pathlib import Path

from mmembed.bench.report import table
from mmembed.bench.run import BenchConfig, run_benchmark


def _rehearsal(
    work_dir: Path, family: str, skip: tuple[str, ...], image_preprocess: str = "pillow", compile: bool = False
) -> BenchConfig:
    """The tiny model on the CPU, every phase a few seconds."""
    return BenchConfig(
        work_dir=work_dir,
        family=family,
        size="tiny",
        device="cpu",
        precisions=("bf16",),
        seconds=2.0,
        processes=1,
        threads=2,
        preprocess_instances=1,
        encoder_instances=1,
        corpus_size=4,
        skip=skip,
        image_preprocess=image_preprocess,
        compile=compile,
    )


def test_bench_rehearsal_on_the_cpu(tmp_path: Path) -> None:
    """bf16 eager and bf16 compiled ahead of time, side by side, with each tower's attention backend."""
    config = _rehearsal(tmp_path, "siglip2", ("smoke",), image_preprocess="torch", compile=True)
    result = run_benchmark(config, log=lambda line: None)
    assert result.errors == {}, result.errors
    assert result.encoder["bf16"]["image"] > 0 and result.encoder["bf16"]["text"] > 0
    assert result.encoder["bf16"]["image_min_cosine_vs_fp32"] >= 0.999
    assert result.baseline["images_per_s"] > 0
    served = result.served["bf16 image"]
    assert served["items_per_s"] > 0 and served["failures"] == {}
    assert result.fast_jpeg_min_cosine >= 0.999 and result.device_preprocess_min_cosine >= 0.999
    assert set(result.preprocess) == {"exact", "fast_jpeg", "torch on cpu (Pillow decode), in process"}
    assert min(result.preprocess.values()) > 0
    report = table(result)
    assert "| served end to end (Triton, gRPC), image preprocessing in torch | bf16 |" in report
    assert "| encoder alone" in report
    assert "| image preprocessing alone, torch on cpu (Pillow decode), in process | - |" in report
    assert result.encoder["bf16-aot"]["image"] > 0 and result.encoder["bf16-aot"]["image_min_cosine_vs_fp32"] >= 0.999
    assert result.served["bf16-aot image"]["items_per_s"] > 0 and result.served["bf16-aot text"]["failures"] == {}
    assert "| served end to end (Triton, gRPC), image preprocessing in torch | bf16-aot |" in report
    compiled = result.towers["siglip2_bf16_aot_vision_encoder"]
    assert compiled["compile_s"] > 0 and compiled["package_bytes"] > 0 and compiled["compiled_for"].startswith("cpu")
    assert "compile_s" not in result.towers["siglip2_bf16_vision_encoder"]
    assert "tower siglip2_bf16_aot_text_encoder: attention flash (CPU); compiled ahead of time for cpu" in report


def test_bench_rehearsal_for_jinaclip2_skips_the_siglip_only_steps(tmp_path: Path) -> None:
    config = _rehearsal(tmp_path, "jinaclip2", ("preprocess",))
    lines: list[str] = []
    result = run_benchmark(config, log=lines.append)
    assert result.errors == {}, result.errors
    assert "steps smoke, baseline compare with transformers' SigLIP: skipped for jinaclip2" in lines
    assert result.baseline == {} and result.encoder["bf16"]["text"] > 0
    assert result.served["bf16 text"]["items_per_s"] > 0 and result.served["bf16 text"]["failures"] == {}
