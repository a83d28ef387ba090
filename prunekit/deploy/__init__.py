"""From a pruned model to what ships and the proof of what it gained: ONNX export (``export``), the
onnxruntime session (``ortsession``) and fast-path check (``fastpath``), INT8 (``quantize``), latency
(``bench``, ``latency``, ``runtime``), the CI gate (``gate``), reports (``report``) and the ``bench`` verb's
comparison (``compare``). The ONNX-only paths import no torch; nothing here imports a job or the trainer."""
