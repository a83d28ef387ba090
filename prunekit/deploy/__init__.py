"""From a pruned model to what ships and the proof of what it gained: ONNX export (``export``), the
fast-path check (``fastpath``), INT8 (``quantize``), timing a model on a runtime and dense vs pruned
(``speed``), latency tables (``latency_table``; measured on a target device: ``device_table``), the channel grid a plan
keeps (``runtime``), what the ``bench`` verb measures (``bench``, its rows: ``frontier``), the CI gate (``gate``)
and reports (``report``). The runtimes themselves (onnxruntime, OpenVINO, PyTorch) are :mod:`prunekit.runtimes`.
The ONNX-only paths import no torch; nothing here imports a job or the trainer."""
