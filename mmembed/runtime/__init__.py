"""What runs inside tritonserver: the glue the `model_repository/` models import, the torch encoder, fp8
layers and on-device preprocessing. Imports the core and, for runtime torch, the family's module only."""
