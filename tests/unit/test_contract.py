"""The family contract: a declaration that does not hold together is refused before anything is built,
and an encoder's settings survive their file unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmembed.core.contract import (
    ContractError,
    EncoderSpec,
    EnsembleSpec,
    ImageStep,
    ModelSpec,
    TextStep,
    pixel_input,
    text_inputs,
)
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.preprocessing import TRANSFORMERS_DECODE, ImageSettings, TextSettings
from mmembed.core.types import Precision, Runtime

IMAGE = ImageSettings(
    height=32, width=32, resample=3, rescale_factor=1 / 255, image_mean=None, image_std=None, decode=TRANSFORMERS_DECODE
)
TEXT = TextSettings(max_length=16, pad_token_id=0, lowercase=False, pad_to_longest=True, attention_mask=True)


def two_towers(**text_changes: object) -> ModelSpec:
    text = replace(TEXT, **text_changes)  # type: ignore[arg-type]
    return ModelSpec(
        encoders=(
            EncoderSpec(name="vision", inputs=(pixel_input(IMAGE),), dimension=8, precision_scope="x"),
            EncoderSpec(name="text", inputs=text_inputs(TEXT, 100), dimension=8, precision_scope="x"),
        ),
        ensembles=(
            EnsembleSpec(modality="image", steps=(ImageStep(settings=IMAGE),), encoder="vision"),
            EnsembleSpec(modality="text", steps=(TextStep(settings=text),), encoder="text"),
        ),
    )


def test_a_declaration_that_holds_together_passes() -> None:
    two_towers().check()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (two_towers(attention_mask=False), r"ensemble text: its steps produce \['input_ids'\], encoder text takes"),
        (
            replace(two_towers(), ensembles=two_towers().ensembles[:1]),
            r"encoders \['text'\] are reached by no ensemble",
        ),
        (
            replace(two_towers(), ensembles=(replace(two_towers().ensembles[0], encoder="audio"),)),
            r"no encoder named 'audio'",
        ),
        (
            replace(two_towers(), ensembles=(two_towers().ensembles[0], two_towers().ensembles[0])),
            "ensemble modalities must be present and distinct",
        ),
        (
            replace(two_towers(), encoders=(two_towers().encoders[0], replace(two_towers().encoders[1], dimension=4))),
            r"one space, got dimensions \[4, 8\]",
        ),
    ],
)
def test_a_declaration_that_does_not_hold_together_is_refused(spec: ModelSpec, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        spec.check()


def test_token_inputs_share_their_dynamic_axis_and_masks_keep_a_prefix() -> None:
    ids, mask = text_inputs(TEXT, 100)
    assert ids.dims == mask.dims == (-1,) and ids.dynamic_axes == mask.dynamic_axes == ((0, "tokens"),)
    batch = EncoderSpec(name="t", inputs=(ids, mask), dimension=8, precision_scope="x").random_inputs(50, seed=1)
    assert batch["input_ids"].max() < 100 and batch["input_ids"].dtype == np.int64
    masks = batch["attention_mask"]
    assert (masks[:, 0] == 1).all() and (np.diff(masks, axis=1) <= 0).all()  # ones, then zeros
    assert len({int(row.sum()) for row in masks}) > 1  # lengths vary


def test_encoder_settings_survive_their_file(tmp_path: Path) -> None:
    spec = two_towers().encoders[1]
    settings = EncoderSettings(
        spec=spec,
        runtime=Runtime.TORCH,
        precision=Precision.FP8,
        max_batch_size=256,
        family_module="mmembed.families.siglip2.model",
        device="cuda",
        compile=True,
    )
    settings.save(tmp_path)
    assert EncoderSettings.load(tmp_path) == settings
