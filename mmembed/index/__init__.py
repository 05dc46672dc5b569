"""Index and search: a folder (or a list) of images into a Qdrant collection through the served model,
resumable and idempotent, and the searches people run on it."""
