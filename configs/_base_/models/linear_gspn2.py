# Linear segmentation probe on a frozen GSPN-2: BatchNorm + 1x1 conv on the last stage.
# The backbone checkpoint: --cfg-options model.backbone.init_cfg.checkpoint=PATH
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='GSPN2',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        frozen_stages=4,
        norm_eval=True,
        # the frozen forward replayed from CUDA graphs (on CUDA; the first 4 input shapes)
        cuda_graph=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/gspn2_tiny.pth')),
    decode_head=dict(
        type='LinearSegHead',
        in_channels=640,
        in_index=3,
        num_classes=150,
        dropout_ratio=0.0,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
