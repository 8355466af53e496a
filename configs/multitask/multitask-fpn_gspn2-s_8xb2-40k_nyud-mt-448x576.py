# Fine-tuning: GSPN-2-S + a multi-scale decoder shared by the tasks + per-task 3x3 and 1x1 layers.
_base_ = './multitask-linear_gspn2-s_8xb2-40k_nyud-mt-448x576.py'
model = dict(freeze_backbone=False, backbone=dict(drop_path_rate=0.1),
             decoder=dict(type='MultiScaleFusionDecoder', in_channels=[96, 192, 384, 768], channels=128,
                          norm_cfg={{_base_.norm_cfg}}),
             head_defaults=dict(_delete_=True, in_channels=128, in_index=0, num_convs=1, channels=64,
                                norm_cfg={{_base_.norm_cfg}}))
optim_wrapper = dict(optimizer=dict(lr=2e-4, weight_decay=0.01),
                     paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
