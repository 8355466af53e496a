import json
import re

import open_clip
import pytest
import torch
from torch import nn
from torchvision.datasets import ImageFolder

from gspn2_dense.clip.zeroshot import (build_classifier, evaluate, load_classnames, topk_correct,
                                       zero_shot)
from gspn2_dense.engine.checkpoint import CheckpointError


class _FixedFeatures(nn.Module):
    """An 'image tower' that returns the feature row stored in each image's first pixels."""

    def encode_image(self, images, normalize=True):
        features = images[:, 0, 0, :]
        return nn.functional.normalize(features, dim=-1) if normalize else features


def test_crafted_case_matches_hand_computed_accuracy():
    # 6 classes; classifier column c is the unit vector e_c, so the ranking of an image's
    # classes is the ranking of its feature entries.
    classifier = torch.eye(6)
    rows = torch.tensor([
        [9., 1, 0, 0, 0, 0],   # target 0: rank 1
        [1., 9, 0, 0, 0, 0],   # target 0: rank 2
        [6., 5, 4, 3, 2, 1],   # target 5: rank 6 (top-5 miss)
        [0., 0, 0, 0, 0, 7],   # target 5: rank 1
        [5., 4, 3, 2, 1, 0],   # target 4: rank 5
    ])
    targets = torch.tensor([0, 0, 5, 5, 4])
    images = torch.zeros(5, 3, 1, 6)
    images[:, 0, 0, :] = rows
    loader = [(images[:3], targets[:3]), (images[3:], targets[3:])]
    result = evaluate(_FixedFeatures(), classifier, loader, progress=False)
    assert result == {'top1': 2 / 5, 'top5': 4 / 5, 'num_images': 5}


def test_topk_correct_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r'expected logits \(N, K\) and targets \(N,\), got \(2, 3\) and \(3,\)'):
        topk_correct(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), (1,))


def test_classnames_must_match_the_folders(demo, tmp_path):
    assert load_classnames(demo.val_dir, demo.classnames_file)[:2] == ['red circle', 'red square']
    with pytest.raises(ValueError, match=r'has 12 class folder\(s\); open_clip\'s ImageNet class names need the 1000'):
        load_classnames(demo.val_dir)
    short = tmp_path / 'short.txt'
    short.write_text('red circle\nred square\n')
    with pytest.raises(ValueError, match=r'names 2 class\(es\), but .* has 12 class folder\(s\)'):
        load_classnames(demo.val_dir, str(short))


def test_tool_on_the_demo_folder_agrees_with_a_direct_computation(demo, tmp_path, run_tool):
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms('GSPN2-test')
    checkpoint = tmp_path / 'epoch_1.pt'
    torch.save({'epoch': 1, 'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()}},
               checkpoint)
    output = tmp_path / 'result.json'
    assert run_tool('clip_zeroshot.py', [checkpoint, '--model', 'GSPN2-test', '--val', demo.val_dir,
                                         '--classnames', demo.classnames_file, '--batch-size', 7,
                                         '--workers', 0, '--output', output]) == 0
    result = json.loads(output.read_text())
    assert result['num_images'] == 24 and result['num_classes'] == 12
    assert result['chance_top1'] == pytest.approx(1 / 12)

    # the same numbers by hand: every image against every prompt-averaged class embedding
    model.eval()
    names = load_classnames(demo.val_dir, demo.classnames_file)
    classifier = build_classifier(model, open_clip.get_tokenizer("GSPN2-test"), names)
    dataset = ImageFolder(demo.val_dir, transform=preprocess)
    with torch.no_grad():
        images = torch.stack([image for image, _ in dataset])
        scores = model.encode_image(images, normalize=True) @ classifier
    targets = torch.tensor(dataset.targets)
    ranks = (scores > scores.gather(1, targets[:, None])).sum(1)
    assert len(names) == scores.shape[1] == 12
    assert result['top1'] == pytest.approx((ranks == 0).float().mean().item())
    assert result['top5'] == pytest.approx((ranks < 5).float().mean().item())


def test_a_checkpoint_of_another_model_gets_a_short_summary(demo, tmp_path, run_tool, capsys):
    torch.manual_seed(0)
    other, _, _ = open_clip.create_model_and_transforms('GSPN2-N-demo')
    checkpoint = tmp_path / 'epoch_1.pt'
    torch.save({'epoch': 1, 'state_dict': {f'module.{k}': v for k, v in other.state_dict().items()}},
               checkpoint)
    message = (r'epoch_1.pt does not fit the model: .*\d+ have another shape \(.*checkpoint '
               r'\(\d+.*model \(\d+.*Expected a CLIP checkpoint of model GSPN2-test; pass the '
               r'--model the checkpoint was trained with')
    with pytest.raises(CheckpointError, match=message):
        zero_shot(str(checkpoint), 'GSPN2-test', demo.val_dir, demo.classnames_file, workers=0,
                  progress=False)
    assert run_tool('clip_zeroshot.py', [checkpoint, '--model', 'GSPN2-test', '--val', demo.val_dir,
                                         '--classnames', demo.classnames_file, '--workers', 0]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize('content, message', [
    (b'', r'is empty \(0 bytes\)'),
    (b'\x80\x02not a checkpoint at all', r'is corrupt: its pickled data does not decode'),
    (b'PK\x03\x04' + bytes(100), r'is truncated or corrupt and cannot be read'),
])
def test_corrupt_checkpoints_are_refused_with_a_message(demo, tmp_path, run_tool, capsys, content,
                                                        message):
    checkpoint = tmp_path / 'epoch_1.pt'
    checkpoint.write_bytes(content)
    assert run_tool('clip_zeroshot.py', [checkpoint, '--model', 'GSPN2-test', '--val', demo.val_dir,
                                         '--classnames', demo.classnames_file, '--workers', 0]) == 1
    err = capsys.readouterr().err
    assert re.search(message + r'.*Expected an open_clip_train checkpoint', err)
    assert 'weights_only=False' not in err
