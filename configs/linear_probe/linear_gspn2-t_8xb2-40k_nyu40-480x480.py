_base_ = [
    '../_base_/models/linear_gspn2.py', '../_base_/datasets/nyu40_480x480.py',
    '../_base_/default_runtime.py', '../_base_/schedules/linear_probe_40k.py'
]
crop_size = (480, 480)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=40))
