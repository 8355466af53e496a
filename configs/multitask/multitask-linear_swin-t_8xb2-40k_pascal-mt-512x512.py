# timm swin_tiny_patch4_window7_224 baseline of multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py: the same probes and protocol (Delta_m: set baselines).
_base_ = './multitask-linear_gspn2-t_8xb2-40k_pascal-mt-512x512.py'
model = dict(backbone=dict(_delete_=True, type='TimmFeatures', model_name='swin_tiny_patch4_window7_224',
                           checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth', cuda_graph=True, img_size=(512, 512), strict_img_size=False),
             head_defaults=dict(in_channels=[96, 192, 384, 768]))
test_evaluator = dict(baselines=None)
