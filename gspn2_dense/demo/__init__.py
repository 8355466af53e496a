"""The demo main job: synthetic data, linear probes on CPU, metrics and visualisations."""
from .data import DEMO_DATASETS, DEMO_ROOTS, make_demo_data
from .job import run_demo

__all__ = ['DEMO_DATASETS', 'DEMO_ROOTS', 'make_demo_data', 'run_demo']
