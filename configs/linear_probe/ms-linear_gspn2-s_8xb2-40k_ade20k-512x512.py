_base_ = './ms-linear_gspn2-t_8xb2-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint='checkpoints/gspn2_small.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
