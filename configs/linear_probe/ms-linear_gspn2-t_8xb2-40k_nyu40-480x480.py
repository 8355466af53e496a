# Multi-scale linear probe: all four stages resized to stride 4 and concatenated.
_base_ = './linear_gspn2-t_8xb2-40k_nyu40-480x480.py'
model = dict(
    decode_head=dict(
        in_channels=[80, 160, 320, 640], in_index=[0, 1, 2, 3], input_transform='resize_concat'))
