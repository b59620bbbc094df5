"""Export a trained run to ONNX (+ int8), with a parity check against PyTorch."""
