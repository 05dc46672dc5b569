"""JinaCLIP-v2's text tower: transformers' native Jina-XLM-RoBERTa encoder, mean-pooled over real tokens.

The padding mask comes from the token ids themselves (id != pad), so the tower takes `input_ids` only,
like the official model, and any padding length gives the same embedding.
"""

from __future__ import annotations

from typing import Any

import torch


def text_config(settings: dict[str, Any]) -> Any:
    """A JinaEmbeddingsV3Config from complete XLM-RoBERTa settings (official key names, see
    `jinaclip2_layout.text_settings_of`)."""
    from transformers import JinaEmbeddingsV3Config

    return JinaEmbeddingsV3Config(
        vocab_size=int(settings["vocab_size"]),
        hidden_size=int(settings["hidden_size"]),
        num_hidden_layers=int(settings["num_hidden_layers"]),
        num_attention_heads=int(settings["num_attention_heads"]),
        intermediate_size=int(settings["intermediate_size"]),
        hidden_act=str(settings["hidden_act"]),
        max_position_embeddings=int(settings["max_position_embeddings"]),
        type_vocab_size=int(settings["type_vocab_size"]),
        layer_norm_eps=float(settings["layer_norm_eps"]),
        pad_token_id=int(settings["pad_token_id"]),
        bos_token_id=int(settings["bos_token_id"]),
        eos_token_id=int(settings["eos_token_id"]),
        rope_parameters={"rope_type": "default", "rope_theta": float(settings["rotary_emb_base"])},
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


class JinaTextTower(torch.nn.Module):
    """input_ids [B, T] -> mean of the last hidden states over non-pad tokens [B, hidden]."""

    def __init__(self, config: Any) -> None:
        from transformers import JinaEmbeddingsV3Model

        super().__init__()
        config._attn_implementation = "sdpa"
        self.encoder = JinaEmbeddingsV3Model(config, add_pooling_layer=False)
        self.pad_token_id = int(config.pad_token_id)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_token_id).long()
        hidden: torch.Tensor = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
