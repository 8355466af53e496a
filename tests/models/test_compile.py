"""torch.compile (inductor) of the whole models: eager and compiled agree, forward and backward.

The GSPN-2 timm backbone compiles with ``fullgraph=True`` (no graph break around the fused op),
mmseg's EncoderDecoder with our heads compiles through mmengine's ``compile`` config option,
and the open_clip model with a GSPN-2 tower compiles. CPU here; the device run repeats every test
on CUDA, in bfloat16 autocast (``tools/device/backbone_run.sh``, parts tests and compile).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import gspn2_dense  # noqa: F401  (registers the timm models)

ROOT = Path(__file__).resolve().parents[2]
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
# float32 on the CPU; bfloat16 autocast on a GPU, compared within bf16 tolerance.
TOL = dict(rtol=1e-4, atol=1e-4) if DEVICE == 'cpu' else dict(rtol=5e-2, atol=5e-2)


def _autocast():
    return torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == 'cuda')


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(got, want):
    assert got.keys() == want.keys() and len(want) > 0
    for name in want:
        scale = want[name].abs().max().clamp_min(1e-3)
        torch.testing.assert_close(got[name] / scale, want[name] / scale, **TOL, msg=name)


@pytest.mark.parametrize('channels_last', [False, True])
def test_backbone_compiles_fullgraph_and_matches_eager(channels_last):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model('gspn2_test', drop_path_rate=0.0).to(DEVICE).train()
    x = torch.randn(2, 3, 64, 48, device=DEVICE)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, fullgraph=True)
    with _autocast():
        want = model(x)
    want.float().square().mean().backward()
    want_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    with _autocast():
        got = compiled(x)
    got.float().square().mean().backward()
    torch.testing.assert_close(got.float(), want.float(), **TOL)
    _assert_grads_close(_grads(model), want_grads)
    with torch.no_grad(), _autocast():
        torch.testing.assert_close(compiled.forward_features(x).float(),
                                   model.forward_features(x).float(), **TOL)


def test_encoder_decoder_compiles_and_matches_eager():
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData

    cfg = Config.fromfile(str(ROOT / 'configs/demo/ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py'))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(DEVICE).train()
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 64, 64), generator=gen).to(DEVICE))
        samples.append(sample)
    inputs = torch.randn(2, 3, 64, 64, generator=gen).to(DEVICE)

    def loss_of(fn):
        model.zero_grad(set_to_none=True)
        with _autocast():
            losses = fn(inputs, samples, mode='loss')
        total = sum(v for k, v in losses.items() if 'loss' in k)
        total.backward()
        return total.detach(), _grads(model)

    want, want_grads = loss_of(model)
    torch._dynamo.reset()
    got, got_grads = loss_of(torch.compile(model.forward))
    torch.testing.assert_close(got, want, **TOL)
    _assert_grads_close(got_grads, want_grads)


def test_open_clip_model_with_gspn2_tower_compiles():
    open_clip = pytest.importorskip('open_clip')
    from gspn2_dense.clip import register_model_configs
    register_model_configs()
    torch.manual_seed(0)
    model = open_clip.create_model('GSPN2-test').to(DEVICE).eval()
    images = torch.randn(2, 3, *model.visual.image_size, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(model.encode_image)
    with torch.no_grad(), _autocast():
        torch.testing.assert_close(compiled(images).float(), model.encode_image(images).float(), **TOL)


def test_mmengine_compile_option_trains(tmp_path):
    """tools/train.py on a config with ``compile = dict(...)``: mmengine compiles train_step (on the
    GPU where there is one: the device run of ``backbone_run.sh``'s compile part)."""
    from gspn2_dense.demo import make_probe_data
    root = make_probe_data(str(tmp_path / 'data'), datasets=['ade20k'])['ade20k']
    config = 'configs/demo/ms-linear_gspn2-test-compiled_1xb2-4_ade20k-demo-64x64.py'
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', config, '--work-dir', str(tmp_path / 'work'),
         '--cfg-options', *[f'{k}.dataset.data_root={root}'
                            for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '2'})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Iter(train) [4/4]' in out and 'mIoU' in out
