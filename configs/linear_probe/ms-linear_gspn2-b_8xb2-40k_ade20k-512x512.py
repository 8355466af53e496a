_base_ = './ms-linear_gspn2-t_8xb2-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint='checkpoints/gspn2_base.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
