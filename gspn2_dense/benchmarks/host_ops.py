"""How many PyTorch operators a model's training step dispatches: the host's share of the work.

An eager step costs the host a roughly fixed time per operator (Python, autograd, autocast,
dispatcher, launch). When that sum exceeds the GPU's kernel time the step is host-bound and
faster kernels do not make it faster: GSPN-2-T's eager step at 224 px B128 on the H200 summed
64 ms of kernels but took about 170 ms (``docs/benchmarks/glue_ab_859861f.md``). The operator
count is what to cut then, and it does not need a GPU: it is counted at the dispatcher
(``TorchDispatchMode``, every ATen call below autograd, forward and backward) on any device.

The optimizer step is left out (on CUDA, AdamW's foreach path is a few dozen operators for
the whole model). Counts differ a little between devices where a path does (e.g. the fused
layer norm on CUDA is one extension call where the CPU runs ``F.layer_norm`` and casts).
"""
from collections import Counter
from typing import Dict, Sequence

import timm
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from . import report
from .timing import run_stamp

__all__ = ['OperatorCounter', 'count_training_step', 'markdown', 'run']


class OperatorCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched while active, by operator name."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_training_step(name: str, device: str = 'cpu', batch: int = 2, img_size: int = 224,
                        dtype: torch.dtype = torch.bfloat16) -> Dict:
    """Operators of one forward + cross-entropy + backward of the timm model ``name`` under
    ``dtype`` autocast, counted after one uncounted step; and (``inference_operators``) of one
    eval-mode forward under ``torch.no_grad``, what a batch-1 eager latency pays for."""
    import gspn2_dense  # noqa: F401  (registers the models)
    torch.manual_seed(0)
    model = timm.create_model(name).to(device).train()
    images = torch.randn(batch, 3, img_size, img_size, device=device)
    labels = torch.randint(0, model.num_classes, (batch,), device=device)

    def step():
        with torch.autocast(torch.device(device).type, dtype=dtype):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def infer():
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=dtype):
            model(images)

    step()
    with OperatorCounter() as counter:
        step()
    model.eval()
    infer()
    with OperatorCounter() as inference:
        infer()
    return dict(model=name, operators=sum(counter.counts.values()),
                parameters=sum(1 for _ in model.parameters()), by_operator=dict(counter.counts),
                inference_operators=sum(inference.counts.values()))


def markdown(result: Dict, top: int = 12) -> str:
    rows = result['rows']
    names = [n for n, _ in Counter(rows[0]['by_operator']).most_common(top)]
    lines = [f"# Operators per training step (forward + backward) and inference forward "
             f"({result['dtype']} autocast, batch {result['batch']}, {result['img_size']} px, "
             f"{result['device_kind']})", '',
             report.stamp_line(result) + f"; `{result['command']}`", '',
             report.table(['model', 'operators', 'parameter tensors', 'vs ' + rows[0]['model'],
                           'inference forward operators', 'vs ' + rows[0]['model']],
                          [[r['model'], r['operators'], r['parameters'],
                            f"{r['operators'] / rows[0]['operators']:.2f}x",
                            r['inference_operators'],
                            f"{r['inference_operators'] / rows[0]['inference_operators']:.2f}x"]
                           for r in rows]), '',
             f"Most frequent operators of {rows[0]['model']} (and the others' counts of them):", '',
             report.table(['operator'] + [r['model'] for r in rows],
                          [[f'`{n}`'] + [r['by_operator'].get(n, 0) for r in rows] for n in names])]
    return '\n'.join(lines) + '\n'


def run(models: Sequence[str], device: str, batch: int, img_size: int, commit: str,
        command: str) -> Dict:
    rows = [count_training_step(m, device, batch, img_size) for m in models]
    return dict(run_stamp(torch.device(device), commit), command=command, device_kind=device,
                batch=batch, img_size=img_size, dtype='bfloat16', rows=rows)
