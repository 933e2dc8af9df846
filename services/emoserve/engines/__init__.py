"""Inference engines of the acoustic and vocoder stages beyond eager torch: ONNX export, ONNX Runtime, TensorRT,
and the per-stage selection with fallback (README "Engines").

Modules import their optional dependencies (onnx, onnxruntime, tensorrt) only where they use them.
"""
