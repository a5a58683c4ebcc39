"""Every check of what users send, in one place: models (ONNX, .pt2), datasets, a recipe against its
model, a dataset against both. Standard library, onnx and numpy only: the gateway runs them."""
