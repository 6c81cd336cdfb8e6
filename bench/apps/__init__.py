"""The servers the benchmark compares, each serving the same ``GET /search`` route."""
