"""An OpenAI-compatible embeddings API in front of Triton (`mmembed gateway`), built on the async client,
so batching stays Triton's: applications written for OpenAI's `/v1/embeddings` change `base_url` and
`model`, and may also send images."""
