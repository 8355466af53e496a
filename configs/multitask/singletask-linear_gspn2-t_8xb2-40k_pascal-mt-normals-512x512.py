# Single-task baseline of multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py for Delta_m: the normals probe alone; its test writes
# work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-normals-512x512.json.
_base_ = './multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py'
model = dict(heads=dict(_delete_=True, normals=dict(type='NormalsTaskHead')), loss_weights=None)
train_dataloader = dict(dataset=dict(tasks=('normals', )))
val_dataloader = dict(dataset=dict(tasks=('normals', )))
test_dataloader = val_dataloader
test_evaluator = dict(tasks=('normals', ), baselines=None, results_file='work_dirs/results/singletask-linear_gspn2-t_8xb2-40k_pascal-mt-normals-512x512.json')
val_evaluator = dict(tasks=('normals', ))
