"""MM-Embed: NV-Embed reading images and texts together (`mmembed checkpoint mm_embed`)."""

from mmembed.families.mm_embed.model import FAMILY

__all__ = ["FAMILY"]
