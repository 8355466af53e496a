# NYUD-v2 multi-task (795 train / 654 val, 480x640): semseg (40), depth, normals, edges.
# Training crops of 448x576 after random scaling and flipping; evaluation on the full frames.
dataset_type = 'NYUDMultiTaskDataset'
data_root = 'data/NYUD_MT'
tasks = ('semseg', 'depth', 'normals', 'edge')
crop_size = (448, 576)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='MultiTaskRandomResize', ratio_range=(1.0, 1.5)),
    dict(type='MultiTaskRandomCrop', crop_size=crop_size),
    dict(type='MultiTaskRandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackMultiTaskInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='PackMultiTaskInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', tasks=tasks,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', tasks=tasks,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
# Edge tolerance 0.011 of the image diagonal (the multi-task codebases' SEISM setting for NYUD).
test_evaluator = dict(type='MultiTaskMetric', tasks=tasks, num_classes=dict(semseg=40),
                      max_depth=10.0, edge_max_dist=0.011)
# Validation during training: 9 edge thresholds instead of 99 (a validation takes a tenth of the time,
# minutes instead of an hour on NYUD-MT; its odsF can be a little lower), no result file, no Delta_m.
# The test keeps the standard 99.
val_evaluator = dict(test_evaluator, edge_thresholds=9)
