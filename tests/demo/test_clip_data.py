import argparse
import json
import os
import random
import tarfile

import numpy as np
import open_clip
import pytest
import torch
from open_clip_train import data as oc_data
from PIL import Image

from gspn2_dense.demo.clip_data import COLORS, class_descriptions, draw_sample


def test_shards_have_datacomp_layout(demo):
    shard_dir = os.path.dirname(demo.shards[0])
    sizes = json.load(open(os.path.join(shard_dir, 'sizes.json')))
    assert sizes == {f'{i:05d}.tar': 8 for i in range(4)}
    with tarfile.open(demo.shards[1]) as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile('000010003.json'))
        caption = tar.extractfile('000010003.txt').read().decode()
    assert len(names) == 24 and {n.rsplit('.', 1)[1] for n in names} == {'jpg', 'txt', 'json'}
    assert meta['key'] == '000010003' and meta['caption'] == caption and meta['status'] == 'success'
    assert any(description in caption for description in class_descriptions())
    assert sorted(os.listdir(demo.val_dir)) == [f'n{90000000 + i:08d}' for i in range(12)]
    assert open(demo.classnames_file).read().split('\n')[:12] == class_descriptions()


def test_captions_describe_the_images():
    rng = random.Random(0)
    for description in class_descriptions():
        image = torch.from_numpy(np.asarray(draw_sample(description, 48, rng))).reshape(-1, 3).float()
        colour = torch.tensor(COLORS[description.split()[0]], dtype=torch.float)
        # the drawn shape (at least a 0.35 x 0.35 box, a triangle fills half of it) is in
        # about the named colour
        assert ((image - colour).norm(dim=1) < 60).float().mean() > 0.04, description


def test_open_clips_own_webdataset_pipeline_reads_the_shards(demo):
    _, preprocess, _ = open_clip.create_model_and_transforms('GSPN2-test')
    args = argparse.Namespace(train_data=demo.train_pattern, val_data=None, dataset_resampled=False,
                              train_num_samples=None, train_data_upsampling_factors=None,
                              workers=0, world_size=1, seed=0, batch_size=8)
    info = oc_data.get_wds_dataset(args, preprocess, is_train=True,
                                   tokenizer=open_clip.get_tokenizer('GSPN2-test'))
    assert info.dataloader.num_samples == 32   # from sizes.json
    batches = list(info.dataloader)
    assert len(batches) == 4
    images, texts = batches[0]
    assert images.shape == (8, 3, 32, 32) and texts.shape == (8, 16)
    assert isinstance(Image.open(os.path.join(demo.val_dir, 'n90000000', '000_0000.jpg')), Image.Image)


def test_make_demo_shards_tool_and_bad_counts(tmp_path, run_tool, capsys):
    assert run_tool('make_demo_shards.py', [tmp_path, '--num-shards', 2, '--samples-per-shard', 3,
                                            '--val-per-class', 1, '--image-size', 16]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['train_pattern'].endswith('{00000..00001}.tar') and info['num_samples'] == 6
    assert sorted(os.listdir(tmp_path / 'shards')) == ['00000.tar', '00001.tar', 'sizes.json']
    from gspn2_dense.demo.clip_data import make_clip_shards
    with pytest.raises(ValueError, match=r'expected num_shards, samples_per_shard and val_per_class >= 1, got 0, 3 and 1'):
        make_clip_shards(str(tmp_path / 'bad'), num_shards=0, samples_per_shard=3, val_per_class=1)
