# Multi-task linear probes on a frozen GSPN-2-T, PASCAL-MT (semseg, human parts, saliency, normals, edges).
# Delta_m reads the single-task probes' results (singletask-linear_gspn2-t_*_pascal-mt-*: test them first).
_base_ = ['../_base_/models/multitask-linear_gspn2.py', '../_base_/datasets/pascal_mt_512x512.py',
          '../_base_/default_runtime.py', '../_base_/schedules/linear_probe_40k.py']
model = dict(
    heads=dict(
        semseg=dict(type='SegTaskHead', num_classes=21),
        human_parts=dict(type='SegTaskHead', num_classes=7),
        sal=dict(type='BinaryTaskHead', loss_decode=dict(type='BalancedBCELoss')),
        normals=dict(type='NormalsTaskHead'),
        edge=dict(type='BinaryTaskHead', loss_decode=dict(type='BalancedBCELoss', pos_weight=0.95))),
    loss_weights=dict(semseg=1.0, human_parts=2.0, sal=5.0, normals=10.0, edge=50.0))  # the multi-task codebases' weights
test_evaluator = dict(
    baselines=dict(
        semseg='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-semseg-512x512.json',
        human_parts='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-human-parts-512x512.json',
        sal='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-sal-512x512.json',
        normals='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-normals-512x512.json',
        edge='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-edge-512x512.json'))
