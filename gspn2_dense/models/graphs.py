"""A frozen backbone's forward replayed from CUDA graphs.

A linear probe trains a head on a frozen backbone: the backbone's forward is the same work
every step, and at the batch sizes and resolutions of dense probes its eager forward is bound
by the host (GSPN-2-T: about 1900 PyTorch operators per forward, 27 ms at 512 px, batch 2, on
an H100 whose GPU needs a fraction of that; docs/benchmarks/backbones.md). :class:`FrozenForwardGraphs`
captures the forward once per input signature (shape, dtype, device, autocast state) into a
CUDA graph and replays it, so the host issues one launch instead of the operators.

It applies only where replaying is the same computation: a CUDA input that needs no gradient,
no parameter that needs one (while autograd records), and no dropout, drop-path or batch-norm
layer in training mode. Anything else runs eagerly. The backbones take it as
``cuda_graph=True`` (:class:`~gspn2_dense.models.backbones.GSPN2Backbone`,
:class:`~gspn2_dense.models.timm_backbone.TimmFeatureBackbone`).
"""
import logging
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import DropPath
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

__all__ = ['FrozenForwardGraphs', 'optional_graphs']


def _depends_on_training(module: nn.Module) -> bool:
    """Whether ``module``'s output changes with its training flag (a dropout or drop-path of
    probability 0, as in a classifier head built with ``drop_rate=0``, does not)."""
    if isinstance(module, _DropoutNd):
        return module.p > 0
    if isinstance(module, DropPath):
        return module.drop_prob > 0
    return isinstance(module, _BatchNorm)


class FrozenForwardGraphs:
    """CUDA graphs of ``forward(x)`` for a frozen ``module``, at most ``max_graphs`` of them.

    Args:
        module: The module ``forward`` computes with (its parameters, buffers and training
            flags decide whether a call may be replayed).
        forward: ``x -> tuple of tensors``, the computation to capture.
        max_graphs: Graphs kept, for the first input signatures seen (a probe's training crop
            comes first); calls of further signatures run eagerly, so that inputs of changing
            sizes (whole-image validation) do not capture a graph each (every graph keeps the
            memory of its forward).
        warmup: Eager calls on a side stream before a capture (lazy initialisation, cuBLAS
            workspaces), as ``torch.cuda.graphs`` asks.

    A replay returns copies of the captured outputs, so a result stays valid after the next
    call. Moving the module or replacing its parameters (new storage) drops the graphs;
    in-place updates of the parameters (``load_state_dict``) are seen by the replays.
    """

    def __init__(self, module: nn.Module, forward: Callable[[torch.Tensor], Tuple[torch.Tensor, ...]],
                 max_graphs: int = 4, warmup: int = 2):
        if not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f'max_graphs must be a positive int, got {max_graphs!r}')
        if not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f'warmup must be a positive int (cuBLAS and the kernels initialise on '
                             f'first use, which a capture cannot), got {warmup!r}')
        self.module = module
        self.forward = forward
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.graphs: Dict[Hashable, tuple] = {}
        self._storage_key = None
        self._told_full = False

    def _walk(self) -> Tuple[tuple, bool]:
        """One pass over the module: the addresses of its parameters and buffers (what the
        graphs read) and whether it computes as a frozen function now (:meth:`frozen`).
        It runs on every call, so it walks the tree once, reading each module's own
        ``_parameters`` and ``_buffers`` (``parameters()`` and ``buffers()`` would walk it
        once each, and take longer per module)."""
        recording = torch.is_grad_enabled()
        storage, frozen = [], True
        for module in self.module.modules():
            if frozen and module.training and _depends_on_training(module):
                frozen = False
            for param in module._parameters.values():
                if param is not None:
                    storage.append(param.data_ptr())
                    frozen = frozen and not (recording and param.requires_grad)
            storage.extend(b.data_ptr() for b in module._buffers.values() if b is not None)
        return tuple(storage), frozen

    def frozen(self) -> bool:
        """Whether the module computes as a frozen function now: no parameter needs a gradient
        while autograd records, and no layer whose output depends on it is in training mode."""
        return self._walk()[1]

    def _input_applies(self, x: torch.Tensor) -> bool:
        if torch.compiler.is_compiling():
            return False
        return x.is_cuda and not x.requires_grad and not torch.cuda.is_current_stream_capturing()

    def applies(self, x: torch.Tensor) -> bool:
        """Whether a call with ``x`` may be replayed (else it must run eagerly). Never inside
        ``torch.compile`` (a compiled model traces the eager forward; its own CUDA graphs are
        ``mode='reduce-overhead'``)."""
        return self._input_applies(x) and self.frozen()

    def _signature(self, x: torch.Tensor) -> Hashable:
        autocast = torch.is_autocast_enabled('cuda')
        return (tuple(x.shape), x.stride(), x.dtype, x.device,
                autocast, torch.get_autocast_dtype('cuda') if autocast else None)

    def _capture(self, x: torch.Tensor) -> tuple:
        static_x = x.detach().clone()
        # The caller's autocast, without its cast cache: a cached cast made during the capture
        # would live in the graph's memory pool.
        enabled = torch.is_autocast_enabled('cuda')
        autocast = torch.autocast('cuda', enabled=enabled, dtype=torch.get_autocast_dtype('cuda'),
                                  cache_enabled=False)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), torch.no_grad(), autocast:
            for _ in range(self.warmup):
                self.forward(static_x)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad(), autocast:
            static_out = self.forward(static_x)
        if not isinstance(static_out, tuple) or not all(isinstance(t, torch.Tensor) for t in static_out):
            raise TypeError(f'forward must return a tuple of tensors to be replayed, got '
                            f'{type(static_out).__name__}')
        return graph, static_x, static_out

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        storage, frozen = self._walk() if self._input_applies(x) else (None, False)
        if not frozen:
            raise RuntimeError('this call cannot be replayed from a CUDA graph (a CPU input, an input '
                               'or parameter that needs a gradient, or a layer in training mode): '
                               'check applies(x) first and run the module eagerly')
        return self._replay(x, storage)

    def run(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``forward(x)``: replayed where :meth:`applies`, else eagerly."""
        if self._input_applies(x):
            storage, frozen = self._walk()
            if frozen:
                return self._replay(x, storage)
        return self.forward(x)

    def _replay(self, x: torch.Tensor, storage: tuple) -> Tuple[torch.Tensor, ...]:
        # Graphs read parameters and buffers at the addresses they had when captured.
        if storage != self._storage_key:
            self.graphs.clear()
            self._storage_key = storage
        key = self._signature(x)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                if not self._told_full:
                    logging.getLogger(__name__).info(
                        f'{self.max_graphs} CUDA graphs captured (input shapes '
                        f'{[k[0] for k in self.graphs]}); other shapes run eagerly')
                    self._told_full = True
                return self.forward(x)
            entry = self.graphs[key] = self._capture(x)
        graph, static_x, static_out = entry
        static_x.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in static_out)


def optional_graphs(cuda_graph: bool, module: nn.Module,
                    forward: Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]
                    ) -> Optional[FrozenForwardGraphs]:
    """A backbone's ``cuda_graph`` option: the graphs of ``forward``, or None when it is off."""
    if not isinstance(cuda_graph, bool):
        raise TypeError(f'cuda_graph must be a bool, got {cuda_graph!r}')
    return FrozenForwardGraphs(module, forward) if cuda_graph else None
