"""Encoder alone, eager vs CUDA-graph replay, per tower and batch: the measurement behind the torch
encoder's choice at load (`torch_encoder._slower_with_graphs`).

    python scripts/graphs_vs_eager.py --size so400m-512 --device cuda

Exports the bf16 torch-runtime repository under --work-dir if it is not there yet (as `mmembed bench`
does) and prints a table. Graphs are captured here whatever they cost, so both columns are measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from mmembed.bench.encoder import encoder_rate
from mmembed.bench.run import BenchConfig, _export_request, _repository, _spec
from mmembed.export import export_model

from mmembed.contract import TOWER_FOLDER
from mmembed.families import get_family
from mmembed.torch_encoder import EncoderOptions, _capture_graphs, build_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="so400m-512")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench"))
    args = parser.parse_args()
    family = get_family("siglip2")
    checkpoint = args.work_dir / f"checkpoint-siglip2-{args.size}"
    if not (checkpoint / "config.json").is_file():
        family.make_checkpoint(args.size, checkpoint)
    config = BenchConfig(size=args.size, device=args.device, work_dir=args.work_dir, precisions=("bf16",))
    repository = _repository(config, "bf16")
    if not repository.is_dir():
        export_model(_export_request(config, checkpoint, repository, "bf16"), log=lambda line: None)
    print("| tower | batch | eager items/s | CUDA graphs items/s |")
    print("| --- | ---: | ---: | ---: |")
    for modality, batch in (("text", 64), ("text", 256), ("image", 16), ("image", 64)):
        model = f"siglip2_bf16_{'vision' if modality == 'image' else 'text'}_encoder"
        tower = family.load_tower(repository / model / "1" / TOWER_FOLDER, modality)  # type: ignore[arg-type]
        options = EncoderOptions(precision="bf16", device=args.device, max_batch_size=batch, cuda_graphs=False)
        encoder = build_encoder(
            tower, _spec(repository / model / "config.pbtxt", modality), options, name=model, fp8_scope=family.fp8_scope
        )
        eager = encoder_rate(encoder, batch, seconds=args.seconds).items_per_s
        replay = float("nan")
        if args.device == "cuda":
            _capture_graphs(encoder, encoder.spec.random_input(8, seed=0).to(args.device))
            replay = encoder_rate(encoder, batch, seconds=args.seconds).items_per_s
        print(f"| {modality} | {batch} | {eager:.0f} | {replay:.0f} |", flush=True)
        del encoder, tower
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
