"""The model-family registry: adding a family means adding one module and one line here."""

from __future__ import annotations

from mmembed.families.base import CheckpointError, ModelFamily, Towers
from mmembed.families.jinaclip2 import FAMILY as JINACLIP2
from mmembed.families.siglip2 import FAMILY as SIGLIP2

FAMILIES: dict[str, ModelFamily] = {SIGLIP2.name: SIGLIP2, JINACLIP2.name: JINACLIP2}

__all__ = ["FAMILIES", "CheckpointError", "ModelFamily", "Towers", "get_family"]


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise CheckpointError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]
