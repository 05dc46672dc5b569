"""JinaCLIP-v2's text tower: transformers' native Jina-XLM-RoBERTa encoder, mean-pooled over real tokens.

The padding mask comes from the token ids themselves (id != pad), so the tower takes `input_ids` only,
like the official model, and any padding length gives the same embedding.
"""

from __future__ import annotations

from typing import Any

import torch


def text_config(settings: dict[str, Any]) -> Any:
    """A JinaEmbeddingsV3Config from the checkpoint's XLM-RoBERTa settings (official key names)."""
    from transformers import JinaEmbeddingsV3Config

    return JinaEmbeddingsV3Config(
        vocab_size=int(settings["vocab_size"]),
        hidden_size=int(settings["hidden_size"]),
        num_hidden_layers=int(settings["num_hidden_layers"]),
        num_attention_heads=int(settings["num_attention_heads"]),
        intermediate_size=int(settings["intermediate_size"]),
        hidden_act=str(settings.get("hidden_act", "gelu")),
        max_position_embeddings=int(settings["max_position_embeddings"]),
        type_vocab_size=int(settings.get("type_vocab_size", 1)),
        layer_norm_eps=float(settings.get("layer_norm_eps", 1e-5)),
        pad_token_id=int(settings.get("pad_token_id", 1)),
        bos_token_id=int(settings.get("bos_token_id", 0)),
        eos_token_id=int(settings.get("eos_token_id", 2)),
        rope_parameters={"rope_type": "default", "rope_theta": float(settings.get("rotary_emb_base", 20000.0))},
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
