"""JinaCLIP-v2 (`jinaai/jina-clip-v2`): two towers, served as NAME_image, NAME_text and NAME_query."""

from mmembed.families.jinaclip2.model import FAMILY

__all__ = ["FAMILY"]
