# Multi-task linear probes on a frozen GSPN-2: per task, BatchNorm + 1x1 conv on the four stages
# resized to stride 4 and concatenated. The leaf config adds `heads` (one per task).
# The backbone checkpoint: --cfg-options model.backbone.init_cfg.checkpoint=PATH
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='MultiTaskDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32)  # training and test batches padded to 32 (labels: with their ignore values)
model = dict(
    type='MultiTaskSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='GSPN2',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        # the frozen forward replayed from CUDA graphs (on CUDA; the first 4 input shapes)
        cuda_graph=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/gspn2_tiny.pth')),
    freeze_backbone=True,
    head_defaults=dict(
        in_channels=[80, 160, 320, 640], in_index=[0, 1, 2, 3], input_transform='resize_concat',
        norm_cfg=norm_cfg),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
