# Single-task baseline of multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py for Delta_m: the depth probe alone; its test writes
# work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-depth-448x576.json.
_base_ = './multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py'
model = dict(heads=dict(_delete_=True, depth=dict(type='DepthTaskHead', max_depth=10.0)), loss_weights=None)
train_dataloader = dict(dataset=dict(tasks=('depth', )))
val_dataloader = dict(dataset=dict(tasks=('depth', )))
test_dataloader = val_dataloader
test_evaluator = dict(tasks=('depth', ), baselines=None, results_file='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-depth-448x576.json')
val_evaluator = dict(tasks=('depth', ))
