"""Where a checkpoint is: a local folder, or a Hugging Face model id fetched through huggingface_hub.

An id goes through `snapshot_download`, so its cache (`HF_HOME`, `HF_HUB_CACHE`), offline mode
(`HF_HUB_OFFLINE=1`: the cache only) and token (`HF_TOKEN`, or `huggingface-cli login`) work as in every
other Hugging Face tool. Only what a checkpoint folder needs is fetched: configs, weights, tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmembed.core.contract import CheckpointError

# Configs, weights and tokenizers; not the ONNX exports, pictures and code some model repositories carry.
CHECKPOINT_FILES = ["*.json", "*.safetensors", "pytorch_model*.bin", "tokenizer.model", "*.txt"]
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(source: str | Path, revision: str | None = None) -> Path:
    """The local folder of SOURCE: the folder itself, or the snapshot of a hub model id (at REVISION:
    a branch, tag or commit; default main). Raises CheckpointError saying what is missing where."""
    path = Path(source).expanduser()
    if path.is_dir():
        if revision is not None:
            raise CheckpointError(f"--revision {revision} applies to hub model ids; {path} is a local folder")
        return path
    if path.exists():
        raise CheckpointError(f"checkpoint {path} is a file; give the folder that holds config.json")
    text = str(source)
    if not _MODEL_ID.match(text) or text.startswith(("./", "../")):
        raise CheckpointError(f"checkpoint folder {path} does not exist (and {text!r} is not a hub model id)")
    return _download(text, revision)


def _download(model_id: str, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{model_id}" + (f" at revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=CHECKPOINT_FILES))
    except LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise CheckpointError(
            f"{where} is not in the Hugging Face cache {constants.HF_HUB_CACHE} and the hub cannot be "
            f"reached{offline}: download it where the hub is reachable, or give a local folder"
        ) from None
    except GatedRepoError:
        raise CheckpointError(f"{where} is gated: accept its licence on huggingface.co and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{model_id} has no revision {revision!r} on the hub") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"no model {model_id!r} on the hub (or it is private: set HF_TOKEN)") from None
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"cannot fetch {where} from the hub: {e}") from None
