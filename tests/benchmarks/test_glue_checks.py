import torch

from gspn2_dense.benchmarks import glue_checks
from gspn2_dense.models import gspn2
from gspn2_dense.models.variants import VARIANTS


def test_folded_lpu_is_the_residual_sum_and_is_undone():
    torch.manual_seed(0)
    lpu = gspn2.LocalPerceptionUnit(6).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    expected = x + lpu.conv(x)
    with glue_checks._lpu_folded():
        torch.testing.assert_close(lpu(x), expected)
    assert gspn2.LocalPerceptionUnit.forward is not glue_checks._folded_lpu
    torch.testing.assert_close(lpu(x), expected)


def test_lpu_sum_traffic_counts_three_maps_per_lpu():
    (row,) = glue_checks.lpu_sum_traffic([256])
    v = VARIANTS['gspn2_tiny']
    maps = sum(2 * d * c * (64 // 2 ** i) ** 2 for i, (d, c) in enumerate(zip(v.depths, v.dims)))
    assert row == dict(img_size=256, lpu_sum_mb=3 * maps * 4 / 1e6)


def test_op_host_cost_times_every_path():
    rows = glue_checks.op_host_cost(calls=3)
    assert len(rows) == 7 and all(r['us_per_call'] > 0 for r in rows)
