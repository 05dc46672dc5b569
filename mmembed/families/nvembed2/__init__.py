"""NV-Embed-v2: bidirectional Mistral-7B with latent-attention pooling (`mmembed checkpoint nvembed2`)."""

from mmembed.families.nvembed2.model import FAMILY

__all__ = ["FAMILY"]
