import json
import os

import timm
import torch

from gspn2_dense.demo.clip_leg import run_clip_leg


def test_clip_demo_leg_end_to_end_with_two_steps(tmp_path):
    lines = []
    backbone = run_clip_leg(str(tmp_path), steps=2, log=lines.append)
    assert os.path.isfile(backbone)
    result = json.loads((tmp_path / 'zeroshot.json').read_text())
    assert result['num_images'] == 120 and result['num_classes'] == 12
    assert any('zero-shot on 120 images of 12 classes: top-1' in line and '(chance 8.3%)' in line
               for line in lines), lines
    trunk = timm.create_model('gspn2_nano', pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=backbone))
    assert trunk(torch.randn(1, 3, 32, 32)).shape == (1, trunk.num_features)
