"""A family's preprocessing settings for a checkpoint, read from its declaration as export reads them."""

from __future__ import annotations

from pathlib import Path

from mmembed.core.contract import ImageStep, ModelFamily, TextStep
from mmembed.core.preprocessing import ImageSettings, TextSettings


def image_settings(family: ModelFamily, checkpoint: Path) -> ImageSettings:
    (step,) = [step for e in family.describe(checkpoint).ensembles if e.modality == "image" for step in e.steps]
    assert isinstance(step, ImageStep)
    return step.settings


def text_settings(family: ModelFamily, checkpoint: Path, modality: str = "text") -> TextSettings:
    (step,) = [step for e in family.describe(checkpoint).ensembles if e.modality == modality for step in e.steps]
    assert isinstance(step, TextStep)
    return step.settings
