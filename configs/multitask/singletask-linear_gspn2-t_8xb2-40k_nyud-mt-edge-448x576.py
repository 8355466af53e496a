# Single-task baseline of multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py for Delta_m: the edge probe alone; its test writes
# work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-edge-448x576.json.
_base_ = './multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py'
model = dict(heads=dict(_delete_=True, edge=dict(type='BinaryTaskHead', loss_decode=dict(type='BalancedBCELoss', pos_weight=0.95))), loss_weights=None)
train_dataloader = dict(dataset=dict(tasks=('edge', )))
val_dataloader = dict(dataset=dict(tasks=('edge', )))
test_dataloader = val_dataloader
test_evaluator = dict(tasks=('edge', ), baselines=None, results_file='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_nyud-mt-edge-448x576.json')
val_evaluator = dict(tasks=('edge', ))
