# CPU demo: multi-task linear probes of gspn2_nano on the synthetic NYUD-MT (gspn2_dense.demo.multitask_data).
_base_ = '../multitask/multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py'
data_root = 'data/demo/NYUD_MT'
crop_size = (64, 64)
iters = 120  # the demo leg's budget (gspn2_dense.demo.pipeline.MULTITASK_ITERS)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(arch='nano', init_cfg=None),
    head_defaults=dict(in_channels=[32, 64, 128, 256], norm_cfg=norm_cfg))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='MultiTaskRandomCrop', crop_size=crop_size),
    dict(type='MultiTaskRandomFlip', prob=0.5),
    dict(type='PackMultiTaskInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='PackMultiTaskInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
# 19 edge thresholds instead of 99: the demo's predictions are coarse and CPU time is short.
val_evaluator = dict(baselines=None, edge_thresholds=19)
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=1e-2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=12),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=12, end=iters),
]
train_cfg = dict(max_iters=iters, val_interval=iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=iters))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
