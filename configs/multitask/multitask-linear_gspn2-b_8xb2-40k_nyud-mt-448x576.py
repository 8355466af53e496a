# GSPN-2-B variant of multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py (Delta_m needs GSPN-2-B single-task runs: set baselines).
_base_ = './multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py'
model = dict(backbone=dict(arch='base', init_cfg=dict(checkpoint='checkpoints/gspn2_base.pth')),
             head_defaults=dict(in_channels=[128, 256, 512, 1024]))
test_evaluator = dict(baselines=None)
