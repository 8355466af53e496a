_base_ = './linear_gspn2-t_8xb2-40k_pascal-context-59-480x480.py'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint='checkpoints/gspn2_small.pth')),
    decode_head=dict(in_channels=768))
