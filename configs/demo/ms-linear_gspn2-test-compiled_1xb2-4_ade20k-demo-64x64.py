# The test-suite probe with mmengine's `compile` runner option: train_step runs under torch.compile.
_base_ = './ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py'
compile = dict(dynamic=False)
