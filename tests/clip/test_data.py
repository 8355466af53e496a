import argparse
import os
import random

import open_clip
import pytest

from gspn2_dense.clip.data import (ShardReader, SkipCounts, check_shard_count, check_shards_exist,
                                    get_wds_dataset)
from gspn2_dense.demo.clip_data import draw_sample, write_shard


def _args(train_data, workers=0, world_size=1, batch_size=2, num_samples=4):
    return argparse.Namespace(train_data=train_data, val_data=None, dataset_resampled=False,
                              train_num_samples=num_samples, train_data_upsampling_factors=None,
                              workers=workers, world_size=world_size, rank=0, seed=0,
                              batch_size=batch_size)


def _loader(train_data, **kwargs):
    _, _, preprocess = open_clip.create_model_and_transforms('GSPN2-test')
    tokenizer = open_clip.get_tokenizer('GSPN2-test')
    return get_wds_dataset(_args(train_data, **kwargs), preprocess, is_train=True,
                           tokenizer=tokenizer).dataloader


def test_fewer_shards_than_workers_times_ranks_is_an_error(demo):
    pattern = os.path.join(os.path.dirname(demo.shards[0]), '{00000..00002}.tar')
    with pytest.raises(ValueError, match=r'expands to 3 shard\(s\).*--workers 2 x world size 2 = 4'):
        get_wds_dataset(_args(pattern, workers=2, world_size=2), None, is_train=True)
    check_shard_count(4, workers=2, world_size=2)
    with pytest.raises(ValueError, match=r'--workers 0 x world size 2 = 2'):
        check_shard_count(1, workers=0, world_size=2)


def test_corrupt_and_truncated_shards_are_skipped_and_counted(demo, tmp_path, truncate):
    good, truncated = demo.shards[0], demo.shards[1]
    truncate(truncated)
    garbage = tmp_path / 'garbage.tar'
    garbage.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(5000)))
    counts = SkipCounts()
    sizes = {good: 8, truncated: 8, str(garbage): 3}
    stage = ShardReader(counts, sizes)
    samples = list(stage([dict(url=good), dict(url=truncated), dict(url=str(garbage))]))
    from_good = [s for s in samples if s['__url__'] == good]
    from_truncated = [s for s in samples if s['__url__'] == truncated]
    assert len(from_good) == 8 and all('txt' in s and 'jpg' in s for s in from_good)
    assert 0 < len(from_truncated) < 8
    report = counts.snapshot()
    assert report['corrupt_shards'] == 2
    # sizes.json knows how many samples each shard held: what did not come out is lost.
    assert report['lost_in_corrupt_shards'] == (8 - len(from_truncated)) + 3


def test_missing_caption_drops_the_sample_and_the_epoch_reports_it(tmp_path):
    rng = random.Random(0)
    samples = [(f'{i:09d}', draw_sample('red circle', 32, rng), None if i == 2 else 'a red circle')
               for i in range(5)]
    write_shard(str(tmp_path / '00000.tar'), samples)
    loader = _loader(str(tmp_path / '00000.tar'), batch_size=2, num_samples=4)
    batches = list(loader)
    assert len(batches) == 2 and all(images.shape == (2, 3, 32, 32) for images, _ in batches)
    assert loader.epoch_reports == [dict(no_caption_or_image=1, undecodable=0,
                                         lost_in_corrupt_shards=0, corrupt_shards=0)]


def test_undecodable_image_is_dropped_and_counted(tmp_path):
    rng = random.Random(0)
    write_shard(str(tmp_path / '00000.tar'),
                [(f'{i:09d}', draw_sample('blue square', 32, rng), 'a blue square') for i in range(3)])
    import io
    import tarfile
    with tarfile.open(tmp_path / '00000.tar', 'a') as tar:
        for name, payload in [('000000009.jpg', b'not a jpeg'), ('000000009.txt', b'broken')]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    loader = _loader(str(tmp_path / '00000.tar'), batch_size=3, num_samples=3)
    assert len(list(loader)) == 1
    assert loader.epoch_reports[0]['undecodable'] == 1


def test_a_worker_whose_shards_are_all_unreadable_fails_instead_of_spinning(tmp_path):
    (tmp_path / '00000.tar').write_bytes(b'\0garbage' * 100)
    loader = _loader(str(tmp_path / '00000.tar'))
    with pytest.raises(RuntimeError, match='every shard it was given is unreadable'):
        list(loader)


def test_a_brace_range_naming_missing_shards_stops_before_training(demo):
    # the demo has shards 00000..00003; the pattern names eight
    pattern = os.path.join(os.path.dirname(demo.shards[0]), '{00000..00007}.tar')
    with pytest.raises(FileNotFoundError, match=r'names 8 shard\(s\), of which 4 do not exist: '
                                                r'.*00004.tar, .*00005.tar, .*00006.tar, .*00007.tar\. '
                                                r'Training would read only the rest'):
        get_wds_dataset(_args(pattern), None, is_train=True)


def test_a_pattern_matching_nothing_is_named(tmp_path):
    pattern = str(tmp_path / 'shards' / 'train-{000..199}.tar')
    with pytest.raises(FileNotFoundError, match=r'names 200 shard\(s\), of which 200 do not exist: '
                                                r'.*train-000.tar, .*train-004.tar, \.\.\.'):
        get_wds_dataset(_args(pattern), None, is_train=True)


def test_remote_shards_are_left_to_the_reader(demo):
    check_shards_exist(['pipe:curl -s https://example.org/00000.tar', 's3://bucket/00001.tar',
                        demo.shards[0]], 'pattern')
    with pytest.raises(FileNotFoundError, match=r'1 do not exist: .*nope.tar'):
        check_shards_exist(['file:' + demo.shards[0], 'file:' + demo.shards[0] + '.nope.tar'],
                           'pattern')
