# Multi-task linear probes on a frozen GSPN-2-T, NYUD-MT (semseg, depth, normals, edges).
# Delta_m reads the single-task probes' results (singletask-linear_gspn2-t_*_nyud-mt-*: test them first).
_base_ = ['../_base_/models/multitask-linear_gspn2.py', '../_base_/datasets/nyud_mt_448x576.py',
          '../_base_/default_runtime.py', '../_base_/schedules/linear_probe_40k.py']
model = dict(
    heads=dict(
        semseg=dict(type='SegTaskHead', num_classes=40),
        depth=dict(type='DepthTaskHead', max_depth=10.0),
        normals=dict(type='NormalsTaskHead'),
        edge=dict(type='BinaryTaskHead', loss_decode=dict(type='BalancedBCELoss', pos_weight=0.95))),
    loss_weights=dict(semseg=1.0, depth=1.0, normals=10.0, edge=50.0))  # the multi-task codebases' weights
test_evaluator = dict(
    baselines=dict(
        semseg='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-semseg-448x576.json',
        depth='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-depth-448x576.json',
        normals='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-normals-448x576.json',
        edge='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-edge-448x576.json'))
