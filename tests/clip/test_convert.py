import os
import random
import re

import open_clip
import pytest
import timm
import torch

from gspn2_dense.clip.checkpoint import convert_clip_to_backbone, extract_image_tower
from gspn2_dense.engine.checkpoint import CheckpointError
from gspn2_dense.models.gspn2 import checkpoint_filter_fn


@pytest.fixture
def clip_checkpoint(tmp_path):
    """A GSPN2-test CLIP model saved the way a DDP open_clip_train run saves it."""
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms('GSPN2-test')
    path = tmp_path / 'epoch_1.pt'
    torch.save({'epoch': 1, 'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()}},
               path)
    return model.eval(), path


def test_converted_tower_loads_in_timm_with_the_same_features(clip_checkpoint, tmp_path, run_tool):
    model, path = clip_checkpoint
    out = tmp_path / 'gspn2_test_clip.pth'
    assert run_tool('convert_clip_to_backbone.py', [path, out]) == 0
    trunk = timm.create_model('gspn2_test', pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(out))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.visual.trunk.forward_features(x)
        assert torch.equal(trunk.forward_features(x), expected)
        # and the CLIP image embedding is the trunk's pooled features through the CLIP head
        assert torch.allclose(model.visual.head(trunk(x)), model.visual(x), atol=1e-6)


def test_conversion_is_the_model_filter_plus_a_save(clip_checkpoint, tmp_path):
    """The written tower is checkpoint_filter_fn of the CLIP file, key for key and bit for bit."""
    _, path = clip_checkpoint
    out = tmp_path / 'tower.pth'
    returned = convert_clip_to_backbone(str(path), str(out))
    written = torch.load(out, weights_only=True)['state_dict']
    expected = checkpoint_filter_fn(torch.load(path, weights_only=True))
    assert list(written) == list(expected) == list(returned)
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    assert not any(k.startswith(('module.', 'visual.', 'text.', 'logit_scale')) for k in written)


def test_a_checkpoint_without_a_timm_tower_is_rejected(tmp_path):
    path = tmp_path / 'vit.pt'
    torch.save({'state_dict': {'visual.conv1.weight': torch.zeros(1), 'logit_scale': torch.zeros(())}},
               path)
    with pytest.raises(CheckpointError, match=r'vit.pt: this clip checkpoint holds no GSPN-2 trunk: expected '
                                              r'keys "visual.trunk.\*", got keys \[\'logit_scale\', '
                                              r'\'visual.conv1\'\]'):
        convert_clip_to_backbone(str(path), str(tmp_path / 'out.pth'))


def test_extracting_a_tower_needs_a_clip_state_dict():
    with pytest.raises(CheckpointError, match=r'expected a CLIP state dict \(open_clip keys\), got a '
                                              r'backbone checkpoint .*with stem.\* / stages.\* / trunk.\* keys'):
        extract_image_tower({'stem.0.weight': torch.zeros(1)})


def test_converted_tower_gives_the_same_features_in_timm_and_the_mmseg_backbone(clip_checkpoint,
                                                                                tmp_path):
    from mmseg.registry import MODELS
    model, path = clip_checkpoint
    out = tmp_path / 'gspn2_test_clip.pth'
    convert_clip_to_backbone(str(path), str(out))
    backbone = MODELS.build(dict(type='GSPN2', arch='test',
                                 init_cfg=dict(type='Pretrained', checkpoint=str(out))))
    backbone.init_weights()
    backbone.eval()
    clip_trunk = model.visual.trunk.state_dict()
    for key, value in backbone.trunk.state_dict().items():
        assert torch.equal(value, clip_trunk[key]), key
    trunk = timm.create_model('gspn2_test', pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(out))).eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        maps = backbone(x)
        expected = trunk.forward_intermediates(x, intermediates_only=True)
    assert len(maps) == len(expected) == 4
    for got, want, stride in zip(maps, expected, (4, 8, 16, 32)):
        assert got.shape[-2:] == (-(-40 // stride),) * 2
        assert torch.equal(got, want)


def test_missing_or_foreign_checkpoints_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CLIP checkpoint '.*nope.pt' does not exist"):
        convert_clip_to_backbone(str(tmp_path / 'nope.pt'), str(tmp_path / 'out.pth'))
    path = tmp_path / 'list.pt'
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match=r'expected a dict checkpoint .* got list'):
        convert_clip_to_backbone(str(path), str(tmp_path / 'out.pth'))


def test_converting_onto_the_source_is_refused_and_the_source_kept(clip_checkpoint, run_tool,
                                                                   capsys):
    _, path = clip_checkpoint
    before = path.read_bytes()
    for argv in ([path, path], [path, path, '--force']):
        code = run_tool('convert_clip_to_backbone.py', argv)
        assert code == 1
        assert 'it is the input checkpoint; name another output file' in capsys.readouterr().err
        assert path.read_bytes() == before


def test_an_existing_output_needs_force(clip_checkpoint, tmp_path, run_tool, capsys):
    _, path = clip_checkpoint
    out = tmp_path / 'tower.pth'
    out.write_bytes(b'keep me')
    assert run_tool('convert_clip_to_backbone.py', [path, out]) == 1
    assert re.search(r'output .*tower.pth already exists; pass --force', capsys.readouterr().err)
    assert out.read_bytes() == b'keep me'
    assert run_tool('convert_clip_to_backbone.py', [path, out, '--force']) == 0
    assert 'stem.0.weight' in torch.load(out, weights_only=True)['state_dict']


def test_output_is_written_atomically(clip_checkpoint, tmp_path, monkeypatch):
    _, path = clip_checkpoint
    out = tmp_path / 'tower.pth'
    out.write_bytes(b'previous tower')

    def save_then_fail(obj, f):  # a save cut off half-way (disk full, killed, ...)
        f.write(b'PK\x03\x04 partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', save_then_fail)
    with pytest.raises(OSError, match='No space left'):
        convert_clip_to_backbone(str(path), str(out), overwrite=True)
    assert out.read_bytes() == b'previous tower'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pt', 'tower.pth']
    monkeypatch.undo()
    convert_clip_to_backbone(str(path), str(out), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pt', 'tower.pth']


@pytest.mark.parametrize('content, message', [
    ('truncated', r'epoch_1.pt \([\d,]+ bytes\) is truncated or corrupt and cannot be read.*'
                  r'Expected an open_clip_train checkpoint'),
    ('random', r'is not a PyTorch checkpoint.*Expected an open_clip_train checkpoint'),
    ('segmentor', r'is a segmentor checkpoint written by tools/train.py.*not a CLIP checkpoint'),
    ('backbone', r'is a backbone checkpoint .*not a CLIP checkpoint'),
])
def test_unusable_sources_get_a_clear_message(clip_checkpoint, tmp_path, run_tool, capsys,
                                              content, message):
    _, path = clip_checkpoint
    if content == 'truncated':
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
    elif content == 'random':
        path.write_bytes(bytes(random.Random(0).randrange(1, 127) for _ in range(4096)))
    elif content == 'segmentor':
        torch.save({'meta': {}, 'state_dict': {'backbone.trunk.stem.0.weight': torch.zeros(1),
                                               'decode_head.conv_seg.weight': torch.zeros(1)}}, path)
    else:
        torch.save({'state_dict': {'stem.0.weight': torch.zeros(1)}}, path)
    out = tmp_path / 'tower.pth'
    with pytest.raises(CheckpointError, match=message):
        convert_clip_to_backbone(str(path), str(out))
    assert run_tool('convert_clip_to_backbone.py', [path, out]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1
    assert 'weights_only=False' not in err and not out.exists()
