# Test-suite variant: gspn2_test (tiny widths), 80 iterations, batches of 4.
_base_ = './multitask-linear_gspn2-nano_1xb8-120_pascal-mt-demo-64x64.py'
iters = 80
model = dict(backbone=dict(arch='test'), head_defaults=dict(in_channels=[8, 16, 32, 64]))
train_dataloader = dict(batch_size=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=4, end=iters),
]
train_cfg = dict(max_iters=iters, val_interval=iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=iters))
