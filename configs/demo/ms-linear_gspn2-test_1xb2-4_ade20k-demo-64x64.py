# Test-suite variant: gspn2_test (tiny widths), a handful of iterations, multi-scale linear probe.
_base_ = './ms-linear_gspn2-nano_1xb8-150_ade20k-demo-64x64.py'
iters = 4
model = dict(backbone=dict(arch='test'), decode_head=dict(in_channels=[8, 16, 32, 64]))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=2)
test_dataloader = val_dataloader
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=2, end=iters),
]
train_cfg = dict(max_iters=iters, val_interval=iters)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=iters))
