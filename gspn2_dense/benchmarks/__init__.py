"""Benchmarks of the op and the models: cases, timing, and the reports in ``docs/benchmarks/``.

``timing`` holds the one timer (CUDA events or wall clock and process CPU time, medians over
iterations), the peak-memory probe and the stamp every report carries (device, versions,
timing environment, date, commit); ``report`` the one writer of tables, ``<out>.json`` /
``<out>.md`` and plots; ``op`` the propagation op's benchmark (CPU kernel vs reference, CPU
builds of two revisions, GPU against the bytes floor); ``profile`` the time per CUDA kernel
(op cases or a backbone training step); ``backbones`` the backbone / dense-prediction
benchmark. The command-line entry points are ``tools/benchmark_op.py``,
``tools/benchmark_op_cpu.py``, ``tools/profile_op.py`` and ``tools/benchmark_backbone.py``.
"""
