"""The names shared by the generated repository, its Python models and the client: one place, no drift."""

from __future__ import annotations

# The ensembles' tensors: what clients send and receive.
IMAGE_INPUT = "IMAGE"
TEXT_INPUT = "TEXT"
# Optional, per item: the task of a query's instruction, for models that take one (NV-Embed).
INSTRUCTION_INPUT = "INSTRUCTION"
EMBEDDING_OUTPUT = "EMBEDDING"

# Tensors between ensemble steps, named as the exported graphs' inputs and output.
PIXEL_VALUES = "pixel_values"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POOL_MASK = "pool_mask"  # the positions pooled into the embedding (NV-Embed: the instruction left out)
RAW_EMBEDDING = "embedding"

# Ensemble parameters that describe the model to clients (`mmembed.dimension` etc.).
PARAM_PREFIX = "mmembed."

# Runtime torch: the folder inside an encoder's version folder that holds its module (config + weights).
TOWER_FOLDER = "tower"

# The header `mmembed serve --api-key` checks: as is over HTTP; over gRPC Triton expects it prefixed.
API_KEY_HEADER = "mmembed-api-key"
GRPC_API_KEY_HEADER = "triton-grpc-protocol-" + API_KEY_HEADER
# The header of the model repository's protocol (load, unload): only the serving process has its key.
ADMIN_KEY_HEADER = "mmembed-admin-key"
