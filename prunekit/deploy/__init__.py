"""From a pruned model to what ships and the proof of what it gained: ONNX export (``export``), the
fast-path check (``fastpath``), INT8 (``quantize``), latency (``bench``, ``latency``, ``latency_table``), the
channel grid a plan keeps (``runtime``), the CI gate (``gate``), reports (``report``) and the ``bench`` verb's
comparison (``compare``). The runtimes themselves (onnxruntime, OpenVINO, PyTorch) are :mod:`prunekit.runtimes`.
The ONNX-only paths import no torch; nothing here imports a job or the trainer."""
