"""Prediction from a run or an exported model: tiling, the torch and ONNX paths,
post-processing to instances, export to ONNX."""
