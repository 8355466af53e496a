"""FrozenForwardGraphs and the backbones' ``cuda_graph`` option (gspn2_dense/models/graphs.py).

On the CPU: when a call may be replayed, the errors, and that the option leaves CPU forwards
eager. On a GPU: replays equal the eager forward bit for bit, per input signature, and
the graphs follow moved parameters.
"""
import types

import pytest
import torch
import torch.nn as nn

from gspn2_dense.models.graphs import FrozenForwardGraphs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(),
                         nn.Dropout(0.5), nn.Conv2d(8, 4, 1))


def _graphs(net):
    return FrozenForwardGraphs(net, lambda x: (net(x), net(x).mean(dim=1)))


def test_arguments_are_checked():
    net = _net()
    with pytest.raises(ValueError, match='max_graphs must be a positive int, got 0'):
        FrozenForwardGraphs(net, net, max_graphs=0)
    with pytest.raises(ValueError, match='warmup must be a positive int .* got 0'):
        FrozenForwardGraphs(net, net, warmup=0)


def test_frozen_follows_gradients_and_training_layers():
    net = _net().eval()
    graphs = _graphs(net)
    assert not graphs.frozen()  # parameters need gradients while autograd records
    with torch.no_grad():
        assert graphs.frozen()
    net.requires_grad_(False)
    assert graphs.frozen()
    net[3].train()  # dropout in training mode
    assert not graphs.frozen()
    net[3].p = 0.0  # a dropout of probability 0 is the identity in either mode
    assert graphs.frozen()
    net[1].train()  # batch norm in training mode
    assert not graphs.frozen()


def test_applies_only_to_frozen_cuda_calls():
    net = _net().eval()
    graphs = _graphs(net)
    x = torch.randn(1, 3, 8, 8)
    assert not graphs.applies(x)  # CPU
    with pytest.raises(RuntimeError, match='cannot be replayed .* check applies'):
        graphs(x)
    if torch.cuda.is_available():
        net.cuda()
        xc = x.cuda()
        assert not graphs.applies(xc)  # parameters need gradients while autograd records
        with torch.no_grad():
            assert graphs.applies(xc)
        net.requires_grad_(False)
        assert graphs.applies(xc)
        assert not graphs.applies(xc.requires_grad_())
        net[3].train()  # dropout in training mode
        assert not graphs.applies(xc.detach())


def test_never_applies_while_compiling(monkeypatch):
    net = _net().eval().requires_grad_(False)
    graphs = _graphs(net)
    cuda_input = types.SimpleNamespace(is_cuda=True, requires_grad=False)
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    assert graphs.frozen() and not graphs.applies(cuda_input)


def test_backbone_option_is_checked_and_cpu_stays_eager():
    pytest.importorskip('mmseg')
    from gspn2_dense.models.backbones import GSPN2Backbone
    from gspn2_dense.models.timm_backbone import TimmFeatureBackbone
    with pytest.raises(TypeError, match="cuda_graph must be a bool, got 'yes'"):
        GSPN2Backbone(arch='test', cuda_graph='yes')
    with pytest.raises(TypeError, match='cuda_graph must be a bool, got 1'):
        TimmFeatureBackbone('resnet18', cuda_graph=1)
    torch.manual_seed(0)
    # the probe configs' backbone in a training loop: frozen, though the wrapper trains (its
    # classifier head's dropout of probability 0 in training mode does not count)
    backbone = GSPN2Backbone(arch='test', frozen_stages=4, cuda_graph=True).train()
    assert backbone.graphs.frozen()
    assert not GSPN2Backbone(arch='test', frozen_stages=3, cuda_graph=True).graphs.frozen()
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert [f.shape for f in backbone(x)] == [f.shape for f in backbone._features(x)]
    assert backbone.graphs.graphs == {}  # nothing captured on the CPU


@cuda
@pytest.mark.parametrize('autocast', [False, True])
def test_replay_equals_eager(autocast):
    torch.manual_seed(0)
    net = _net().cuda().eval().requires_grad_(False)
    graphs = _graphs(net)
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
        for shape in [(2, 3, 16, 16), (1, 3, 8, 12), (2, 3, 16, 16)]:
            x = torch.randn(shape, device='cuda')
            got = graphs(x)
            want = (net(x), net(x).mean(dim=1))
            for a, b in zip(got, want):
                assert a.dtype == b.dtype and torch.equal(a, b)
    assert len(graphs.graphs) == 2  # one per input signature
    first = graphs(torch.randn(2, 3, 16, 16, device='cuda'))[0]
    second = graphs(torch.zeros(2, 3, 16, 16, device='cuda'))[0]
    assert not torch.equal(first, second)  # results are copies, not the graph's buffers


@cuda
def test_graph_limit_and_moved_parameters():
    net = _net().cuda().eval().requires_grad_(False)
    graphs = FrozenForwardGraphs(net, lambda x: (net(x),), max_graphs=2)
    for size in (8, 9, 10):
        x = torch.randn(1, 3, size, size, device='cuda')
        assert torch.equal(graphs(x)[0], net(x))  # the third shape runs eagerly
    assert [k[0] for k in graphs.graphs] == [(1, 3, 8, 8), (1, 3, 9, 9)]
    x = torch.randn(1, 3, 9, 9, device='cuda')
    with torch.no_grad():
        net[0].weight.mul_(2)  # in place: the replays see it
    assert torch.equal(graphs(x)[0], net(x))
    net[0].weight = nn.Parameter(net[0].weight.detach() * 3, requires_grad=False)  # new storage
    assert torch.equal(graphs(x)[0], net(x)) and len(graphs.graphs) == 1


@cuda
def test_probe_backbones_replay():
    pytest.importorskip('mmseg')
    from gspn2_dense.models.backbones import GSPN2Backbone
    torch.manual_seed(0)
    backbone = GSPN2Backbone(arch='test', frozen_stages=4, cuda_graph=True).cuda().train()
    x = torch.randn(2, 3, 96, 96, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        got = backbone(x)
        want = backbone._features(x)
    assert len(backbone.graphs.graphs) == 1
    for a, b in zip(got, want):
        assert torch.equal(a, b)
