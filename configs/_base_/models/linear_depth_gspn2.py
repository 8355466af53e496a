# Linear depth probe on a frozen GSPN-2: BatchNorm + 1x1 conv to 256 uniform depth bins on the
# last stage, depth = softmax-weighted sum of the bin centres; SILog + gradient loss.
# The backbone checkpoint: --cfg-options model.backbone.init_cfg.checkpoint=PATH
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0)  # padded depth is 0 = invalid
model = dict(
    type='DepthEncoderDecoder',
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
        type='LinearDepthHead',
        in_channels=640,
        in_index=3,
        mode='bins',
        num_bins=256,
        min_depth=1e-3,
        max_depth=10.0,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=[
            dict(type='SiLogLoss', loss_weight=1.0),
            dict(type='DepthGradientLoss', loss_weight=0.5),
        ]),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(480, 480), stride=(320, 320)))
