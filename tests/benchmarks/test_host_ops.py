"""The operator counter of tools/count_host_ops.py."""
import torch

from gspn2_dense.benchmarks import host_ops


def test_counter_sees_the_operators_of_a_linear_layer():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    with host_ops.OperatorCounter() as counter:
        layer(x).sum().backward()
    assert counter.counts['aten.addmm'] == 1  # the forward
    assert counter.counts['aten.mm'] == 2  # grad of x and of the weight
    with host_ops.OperatorCounter() as idle:
        pass
    assert not idle.counts


def test_training_step_count_is_reproducible_and_reported():
    first = host_ops.count_training_step('gspn2_test', batch=1, img_size=64)
    again = host_ops.count_training_step('gspn2_test', batch=1, img_size=64)
    assert first['operators'] == again['operators'] == sum(first['by_operator'].values()) > 100
    model_params = sum(1 for _ in __import__('timm').create_model('gspn2_test').parameters())
    assert first['parameters'] == model_params
    result = dict(rows=[first], dtype='bfloat16', batch=1, img_size=64, device_kind='cpu',
                  command='test', torch='x', date='today', commit='abc')
    text = host_ops.markdown(result)
    assert f"| gspn2_test | {first['operators']} | {model_params} | 1.00x |" in text
