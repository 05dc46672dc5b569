"""Running a model repository: the tritonserver process, its probes and watchdog, the load gate, and the
TensorRT version check."""
