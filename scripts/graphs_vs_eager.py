"""Encoder alone, eager vs CUDA-graph replay, per tower and batch: the measurement behind the torch
encoder's choice at load (`torch_encoder._slower_with_graphs`).

    python scripts/graphs_vs_eager.py --size so400m-512 --device cuda

Exports the bf16 torch-runtime repository under --work-dir if it is not there yet (as `mmembed bench`
does) and prints a table. Graphs are captured here whatever they cost, so both columns are measured.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from mmembed.bench.encoder import device_inputs, encoder_rate
from mmembed.bench.run import BenchConfig, export_request, repository_folder
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.names import TOWER_FOLDER
from mmembed.export import export_model
from mmembed.families import get_family
from mmembed.runtime.torch_encoder import build_encoder, capture_graphs


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
    repository = repository_folder(config, "bf16")
    if not repository.is_dir():
        export_model(export_request(config, checkpoint, repository, "bf16"), log=lambda line: None)
    print("| tower | batch | eager items/s | CUDA graphs items/s |")
    print("| --- | ---: | ---: | ---: |")
    for tower, batch in (("text", 64), ("text", 256), ("vision", 16), ("vision", 64)):
        version = repository / f"siglip2_bf16_{tower}_encoder" / "1"
        settings = EncoderSettings.load(version)
        settings = replace(settings, device=args.device, max_batch_size=batch, cuda_graphs=False)
        module = family.load_encoder(tower, version / TOWER_FOLDER)
        encoder = build_encoder(module, settings, name=version.parent.name)
        eager = encoder_rate(encoder, batch, seconds=args.seconds).items_per_s
        replay = float("nan")
        if args.device == "cuda":
            capture_graphs(encoder, device_inputs(encoder, 8, seed=0))
            replay = encoder_rate(encoder, batch, seconds=args.seconds).items_per_s
        print(f"| {tower} | {batch} | {eager:.0f} | {replay:.0f} |", flush=True)
        del encoder, module
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
