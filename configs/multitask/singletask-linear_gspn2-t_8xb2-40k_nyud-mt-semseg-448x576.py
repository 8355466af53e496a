# Single-task baseline of multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py for Delta_m: the semseg probe alone; its test writes
# work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-semseg-448x576.json.
_base_ = './multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py'
model = dict(heads=dict(_delete_=True, semseg=dict(type='SegTaskHead', num_classes=40)), loss_weights=None)
train_dataloader = dict(dataset=dict(tasks=('semseg', )))
val_dataloader = dict(dataset=dict(tasks=('semseg', )))
test_dataloader = val_dataloader
test_evaluator = dict(tasks=('semseg', ), baselines=None, results_file='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-semseg-448x576.json')
val_evaluator = dict(tasks=('semseg', ))
