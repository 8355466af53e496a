# Single-task baseline of multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py for Delta_m: the human_parts probe alone; its test writes
# work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-human-parts-512x512.json.
_base_ = './multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py'
model = dict(heads=dict(_delete_=True, human_parts=dict(type='SegTaskHead', num_classes=7)), loss_weights=None)
train_dataloader = dict(dataset=dict(tasks=('human_parts', )))
val_dataloader = dict(dataset=dict(tasks=('human_parts', )))
test_dataloader = val_dataloader
test_evaluator = dict(tasks=('human_parts', ), baselines=None, results_file='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-human-parts-512x512.json')
val_evaluator = dict(tasks=('human_parts', ))
