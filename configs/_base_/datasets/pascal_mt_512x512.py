# PASCAL-Context multi-task (4998 train / 5105 val): semseg (21), human parts (7), saliency,
# normals, edges. Training crops of 512x512; evaluation on the full images (batch 1).
dataset_type = 'PascalMultiTaskDataset'
data_root = 'data/PASCALContext'
tasks = ('semseg', 'human_parts', 'sal', 'normals', 'edge')
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='MultiTaskRandomResize', ratio_range=(0.5, 2.0)),
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
# Edge tolerance 0.0075 of the image diagonal (the multi-task codebases' SEISM setting for PASCAL).
test_evaluator = dict(type='MultiTaskMetric', tasks=tasks, num_classes=dict(semseg=21, human_parts=7),
                      edge_max_dist=0.0075)
# Validation during training: 9 edge thresholds instead of 99 (a validation takes a tenth of the time,
# minutes instead of an hour on NYUD-MT; its odsF can be a little lower), no result file, no Delta_m.
# The test keeps the standard 99.
val_evaluator = dict(test_evaluator, edge_thresholds=9)
