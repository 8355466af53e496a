"""Benchmarks of the toolkit's models: timing, memory and the reports in ``docs/benchmarks/``.

``timing`` holds the one timer (CUDA events or wall clock, median over iterations), the peak
memory probe and the stamp every report carries (device, versions, date, commit);
``backbones`` the backbone / dense-prediction benchmark behind ``tools/benchmark_backbone.py``.
"""
