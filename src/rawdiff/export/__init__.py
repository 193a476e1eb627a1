"""Deployment formats of the encoder: :mod:`rawdiff.export.onnx` (ONNX graph, onnxruntime backend)."""
