"""Parameter / MAC counting: the propagation op is counted, and T/S/B match the paper."""
import pytest
import timm
import torch
import torch.nn as nn

import gspn2_dense  # noqa: F401  (registers the timm models)
from gspn2_dense.models import gspn2
from gspn2_dense.models.complexity import (complexity_table, count_complexity, count_traffic,
                                           propagate_macs, traffic_table)
from gspn2_dense.models.variants import PAPER_VARIANTS, timm_size_kwargs
from gspn2_dense.ops import gspn_propagate, gspn_propagate_ref


class OneCall(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        b, c, h, w = x.shape
        gates = torch.zeros(b, 4, self.groups, 3, h, w)
        lam = torch.ones(b, 4, c, h, w)
        return gspn_propagate(x * self.scale, gates, lam, lam)


def test_op_formula_on_one_call():
    # 4 directions x 30 pixels x (4 channels x 5 MACs + 2 groups x 3 normalisation MACs)
    assert propagate_macs((1, 4, 5, 6), (1, 4, 2, 3, 5, 6), 4) == 4 * 30 * (4 * 5 + 2 * 3)
    assert propagate_macs((1, 4, 5, 6), (1, 4, 2, 3, 5, 6), 4, normalize=False, merge=False) == 4 * 30 * 4 * 4
    result = count_complexity(OneCall(groups=2), (4, 5, 6))
    assert result.macs == result.propagate_macs == 4 * 30 * (4 * 5 + 2 * 3)


def test_model_macs_are_the_convolutions_plus_the_op():
    model = timm.create_model('gspn2_test').eval()
    expected = []

    def conv_hook(module, inputs, output):
        pixels = output.shape[-2] * output.shape[-1] if output.dim() == 4 else 1
        expected.append(module.weight.numel() * pixels)

    def block_hook(module, inputs, output):
        # Inside a block every convolution keeps the resolution; the 1x1 ones run as GEMMs
        # (not as modules), so they are counted from their weights here.
        _, _, h, w = output.shape
        expected.append(h * w * sum(m.weight.numel() for m in module.modules()
                                    if isinstance(m, nn.Conv2d)))
        mixer = module.mixer
        expected.append(4 * h * w * (5 * mixer.proxy_dim + 3 * mixer.gate_groups))

    in_blocks = {id(m) for block in model.modules() if isinstance(block, gspn2.GSPN2Block)
                 for m in block.modules()}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and id(module) not in in_blocks:
            module.register_forward_hook(conv_hook)
        elif isinstance(module, gspn2.GSPN2Block):
            module.register_forward_hook(block_hook)
    result = count_complexity(model, (3, 61, 47))
    assert result.macs == sum(expected)
    assert result.propagate_macs > 0
    assert result.params == sum(p.numel() for p in model.parameters())


def test_meta_device_count_equals_cpu_count():
    torch.manual_seed(0)
    cpu = count_complexity(timm.create_model('gspn2_test'), (3, 64, 48))
    with torch.device('meta'):
        meta = count_complexity(timm.create_model('gspn2_test'), (3, 64, 48))
    assert (meta.params, meta.macs, meta.macs_by_op) == (cpu.params, cpu.macs, cpu.macs_by_op)


@pytest.mark.parametrize('variant', PAPER_VARIANTS, ids=lambda v: v.name)
def test_variants_within_10_percent_of_the_paper(variant):
    with torch.device('meta'):
        model = timm.create_model(variant.name)
    result = count_complexity(model)
    assert abs(result.params / variant.paper.params - 1) < 0.10, result.params
    assert abs(result.macs / variant.paper.macs - 1) < 0.10, result.macs


def test_table_compares_with_the_paper_only_where_it_has_figures():
    rows = complexity_table(['gspn2_test', 'gspn2_tiny', 'convnext_tiny']).splitlines()[2:]
    test, tiny, convnext = (row.split(' | ') for row in rows)
    assert test[-2:] == ['-', '- |'] and convnext[-2:] == ['-', '- |']
    assert tiny[-2] == '24.0M / 4.2G'
    assert complexity_table(['gspn2_tiny'], img_size=256).splitlines()[2].endswith('| - | - |')


def test_uncounted_propagation_raises(monkeypatch):
    monkeypatch.setattr(gspn2, 'gspn_propagate', gspn_propagate_ref)  # pure PyTorch: invisible to the counter
    with pytest.raises(RuntimeError, match='contains propagation mixers but no MACs were counted for gspn2'):
        count_complexity(timm.create_model('gspn2_test'), (3, 32, 32))


def test_bad_input_size():
    with pytest.raises(ValueError, match=r'input_size must be \(C, H, W\) positive ints, got \(224, 224\)'):
        count_complexity(timm.create_model('gspn2_test'), (224, 224))


# --- kernels and bytes (count_traffic) ---

def test_traffic_of_a_linear_layer_is_its_arguments_and_result():
    # addmm reads the input (8 floats), the bias (4) and the weight (32; its transpose is a
    # view of the parameter), writes 4 floats; the flatten is a view, the input's creation
    # is not counted
    traffic = count_traffic(nn.Sequential(nn.Flatten(), nn.Linear(8, 4)), (1, 1, 8))
    assert (traffic.kernels, traffic.bytes_read, traffic.bytes_written) == (1, 4 * 8, 4 * 4)
    assert traffic.weight_bytes_read == 4 * 36
    assert traffic.by_kind == {'matmul': (1, 32, 16)}


class Attention(nn.Module):
    def forward(self, x):
        q = x.reshape(1, 2, 4, 8)
        return nn.functional.scaled_dot_product_attention(q, q, q)


def test_fused_attention_counts_as_one_kernel():
    traffic = count_traffic(Attention(), (1, 8, 8))
    # q, k, v (the same tensor, passed three times) read, the output written: one kernel,
    # none of the math decomposition the CPU runs
    assert traffic.by_kind == {'attention': (1, 3 * 64 * 4, 64 * 4)}


def test_traffic_kinds_of_a_gspn2_model_on_meta():
    with torch.device('meta'):
        model = timm.create_model('gspn2_test')
    traffic = count_traffic(model, (3, 64, 64))
    assert traffic.by_kind['gspn2 op'][0] == 4  # one call per block, one block per stage
    assert traffic.by_kind['depth-wise conv'][0] == 3 * 4  # two LPUs and the mixer's per block
    assert traffic.kernels == sum(n for n, _, _ in traffic.by_kind.values())
    table = traffic_table(['gspn2_test'], img_size=64)
    assert table.splitlines()[2].startswith(f'| gspn2_test | {traffic.kernels} | ')


def test_fixed_size_baselines_are_built_for_the_input_size():
    """Swin's window grid is fixed when it is built: the tables build it for their input size
    (a 224-px Swin-T refuses 448 px inputs), ViTs interpolate, the others take any size."""
    assert timm_size_kwargs('swin_tiny_patch4_window7_224', 448) == dict(img_size=448)
    assert timm_size_kwargs('vit_small_patch16_224', 448) == dict(dynamic_img_size=True)
    assert timm_size_kwargs('convnext_tiny', 448) == timm_size_kwargs('gspn2_tiny', 448) == {}
    table = traffic_table(['swin_tiny_patch4_window7_224'], img_size=448)
    assert table.splitlines()[2].startswith('| swin_tiny_patch4_window7_224 | ')


def test_traffic_bad_input_size():
    with pytest.raises(ValueError, match=r'input_size must be \(C, H, W\) positive ints, got \(3, 0\)'):
        count_traffic(nn.Identity(), (3, 0))
