"""Sources of the Python-backend models; export copies each one to `REPO/<model>/1/model.py`.

They are thin glue: the logic lives in `mmembed.core.preprocessing` and `mmembed.runtime.glue`, importable and
tested without a server.
"""

from __future__ import annotations

from pathlib import Path

SOURCES = Path(__file__).parent
IMAGE_PREPROCESS = SOURCES / "image_preprocess.py"
TEXT_PREPROCESS = SOURCES / "text_preprocess.py"
IMAGE_TEXT_PREPROCESS = SOURCES / "image_text_preprocess.py"
ONNX_ENCODER = SOURCES / "onnx_encoder.py"
TORCH_ENCODER = SOURCES / "torch_encoder.py"
L2_NORMALIZE = SOURCES / "l2_normalize.py"
