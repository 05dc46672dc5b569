"""The model-family registry, for the CLI's family names: a family is one package plus one line here.

Export, serving and the client take any `ModelFamily` and never look a family up by name.
"""

from __future__ import annotations

from mmembed.core.contract import CheckpointError, ModelFamily
from mmembed.families.jinaclip2 import FAMILY as JINACLIP2
from mmembed.families.mm_embed import FAMILY as MM_EMBED
from mmembed.families.nvembed2 import FAMILY as NVEMBED2
from mmembed.families.siglip2 import FAMILY as SIGLIP2

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (SIGLIP2, JINACLIP2, NVEMBED2, MM_EMBED)}

__all__ = ["FAMILIES", "get_family"]


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise CheckpointError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]
