"""Before the long run: the tiny checkpoint, served on this machine's device, against transformers.

A quick end-to-end check of the exact path the benchmark times (torch runtime, GPU tensors between
steps, CUDA graphs), so a broken path shows as one clear failure instead of a run of zeros.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import torch
from PIL import Image

from mmembed.client import EmbeddingClient
from mmembed.core.numeric_gate import row_cosines
from mmembed.core.sample_images import CAPTIONS, synthetic_jpeg
from mmembed.core.types import Precision, Runtime
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServerSettings, TritonServer


def served_parity(
    work_dir: Path, device: str, precisions: tuple[str, ...], image_preprocess: str = "pillow"
) -> dict[str, float]:
    """Min cosine of served embeddings vs transformers' fp32 SiglipModel + AutoProcessor, per precision,
    with the image preprocessing the benchmark serves with."""
    from transformers import AutoProcessor, SiglipModel

    family = get_family("siglip2")
    checkpoint, repository = work_dir / "smoke-checkpoint", work_dir / "smoke-repository"
    if not (checkpoint / "config.json").is_file():
        family.make_checkpoint("tiny", checkpoint)
    for precision in precisions:
        request = ExportRequest(
            family=family,
            checkpoint=checkpoint,
            repository=repository,
            name=f"smoke_{precision}",
            runtime=Runtime.TORCH,
            precision=Precision(precision),
            device=device,
            image_preprocess=image_preprocess,
        )
        export_model(request, log=lambda line: None)
    jpegs = [synthetic_jpeg(640, 480, seed=seed) for seed in range(8)]
    texts = list(CAPTIONS)
    model = SiglipModel.from_pretrained(checkpoint).eval()  # type: ignore[no-untyped-call]
    processor = AutoProcessor.from_pretrained(checkpoint)  # type: ignore[no-untyped-call]
    images = [Image.open(BytesIO(data)).convert("RGB") for data in jpegs]
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        ids = processor(text=[t.lower() for t in texts], padding="max_length", max_length=64, return_tensors="pt")
        image_features = model.get_image_features(pixel_values=pixels).pooler_output
        text_features = model.get_text_features(input_ids=ids["input_ids"]).pooler_output
    expected_images = torch.nn.functional.normalize(image_features).numpy()
    expected_texts = torch.nn.functional.normalize(text_features).numpy()
    settings = ServerSettings.on_free_ports(repository)
    result: dict[str, float] = {}
    with TritonServer(settings) as server, EmbeddingClient(server.grpc_url) as client:
        for precision in precisions:
            served_images = client.embed_images(f"smoke_{precision}", jpegs)
            served_texts = client.embed_texts(f"smoke_{precision}", texts)
            result[f"{precision} image"] = float(row_cosines(served_images, expected_images).min())
            result[f"{precision} text"] = float(row_cosines(served_texts, expected_texts).min())
    result["reference processor: " + type(processor.image_processor).__name__] = float("nan")
    return result
