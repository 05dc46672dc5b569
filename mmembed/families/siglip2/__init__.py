"""SigLIP-2 (`google/siglip2-*`): two towers, served as NAME_image and NAME_text."""

from mmembed.families.siglip2.model import FAMILY

__all__ = ["FAMILY"]
