# GSPN-2-S variant of multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py (Delta_m needs GSPN-2-S single-task runs: set baselines).
_base_ = './multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py'
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='checkpoints/gspn2_small.pth')),
             head_defaults=dict(in_channels=[96, 192, 384, 768]))
test_evaluator = dict(baselines=None)
