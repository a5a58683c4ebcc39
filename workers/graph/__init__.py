"""Model surgery: ONNX graphs, channels and heads, transformer fusion, ONNX as a torch module, .pt2
programs to and from ONNX."""
