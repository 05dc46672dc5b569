#!/usr/bin/env bash
# The main job, step by step: checkpoint -> export -> serve -> embed. FAMILY=jinaclip2 runs JinaCLIP-v2
# instead of SigLIP-2; CHECKPOINT=DIR or CHECKPOINT=org/name (a hub model id, e.g.
# google/siglip2-so400m-patch16-512 or jinaai/jina-clip-v2) uses a real checkpoint instead of a tiny random one.
set -euo pipefail
WORK=${WORK:-work}
FAMILY=${FAMILY:-siglip2}
# Three ports the OS says are free now (a server already on 8000-8002 does not get in the way), unless
# GRPC_PORT, HTTP_PORT and METRICS_PORT are given.
read -r FREE_GRPC FREE_HTTP FREE_METRICS < <(python - <<'PY'
import socket

sockets = [socket.socket() for _ in range(3)]  # held together: three different ports
for s in sockets:
    s.bind(("", 0))
print(*(s.getsockname()[1] for s in sockets))
PY
)
GRPC_PORT=${GRPC_PORT:-$FREE_GRPC}
HTTP_PORT=${HTTP_PORT:-$FREE_HTTP}
METRICS_PORT=${METRICS_PORT:-$FREE_METRICS}

if [ -z "${CHECKPOINT:-}" ]; then  # no checkpoint given (a folder or a hub model id): a tiny random one
  CHECKPOINT=$WORK/$FAMILY-tiny
  [ -f "$CHECKPOINT/config.json" ] || mmembed checkpoint "$FAMILY" --size tiny --out "$CHECKPOINT"
fi
mmembed export "$FAMILY" --checkpoint "$CHECKPOINT" --repository "$WORK/repository"

mmembed serve --repository "$WORK/repository" --grpc-port "$GRPC_PORT" --http-port "$HTTP_PORT" \
  --metrics-port "$METRICS_PORT" > "$WORK/serve.out" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
until grep -q "Ctrl-C stops" "$WORK/serve.out"; do
  if ! kill -0 $SERVER 2>/dev/null; then cat "$WORK/serve.out"; exit 1; fi
  sleep 0.5
done
cat "$WORK/serve.out"

python - "$GRPC_PORT" "$WORK/sunset.jpg" "$FAMILY" <<'PY'
import sys

import numpy as np
from PIL import Image

from mmembed import EmbeddingClient

port, path, model = sys.argv[1], sys.argv[2], sys.argv[3]
sky = np.linspace([255, 140, 40], [40, 60, 160], 480).astype(np.uint8)  # an orange-to-blue sky
Image.fromarray(np.repeat(sky[:, None, :], 640, axis=1)).save(path, quality=90)

with EmbeddingClient(f"localhost:{port}") as client:
    image = client.embed_images(model, [path])
    text = client.embed_texts(model, ["a photo of a sunset over the sea"])
print(f"image {path}: embedding shape {image.shape}, L2 norm {np.linalg.norm(image):.4f}")
print(f"text: embedding shape {text.shape}, L2 norm {np.linalg.norm(text):.4f}")
print(f"cosine(image, text) = {float(image[0] @ text[0]):.4f}")
PY
