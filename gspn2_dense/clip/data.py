"""The webdataset training pipeline for ``tools/train_clip.py``, with checks and skip counting.

It reads the same shards the same way as ``open_clip_train.data.get_wds_dataset`` (built from
that module's own stages: the deterministic shard shuffle, node / worker splitting, the
non-throwing key grouping, the caption / image filter, the sample shuffle and the epoch length
arithmetic) and adds what a long run on web-scraped shards needs:

* before anything is read, a clear error when a local shard that ``--train-data`` names does
  not exist (listing the first missing ones: a brace range longer than the download would
  otherwise train on part of the data, and a pattern matching nothing would fail inside the
  loader), and when the shard list is shorter than ``--workers x world size`` (a loader worker
  without a shard would spin forever);
* a corrupt or truncated tar is skipped with a logged warning and the run goes on; when the
  shard directory has ``sizes.json`` the samples lost in that shard are counted;
* samples without a caption or an image, and images that do not decode, are dropped and counted;
* at the end of every epoch each rank logs how many samples it skipped and why
  (:class:`SkipCounts`), and a worker whose every shard is unreadable stops the run with an
  error instead of spinning.

Evaluation data (``--val-data``) goes through open_clip's own function unchanged.
"""
import json
import logging
import math
import os
import re
from multiprocessing import Value
from typing import Dict, Iterable, Iterator, Sequence

import webdataset as wds
from open_clip_train import data as oc_data
from webdataset.tariterators import tar_file_expander, url_opener

__all__ = ['CountingLoader', 'ShardReader', 'SkipCounts', 'check_shard_count', 'check_shards_exist',
           'get_wds_dataset']

logger = logging.getLogger(__name__)

# Kept at import time: the launch path (gspn2_dense.clip.train) routes open_clip's
# ``get_wds_dataset`` to the function below, which hands evaluation data back to this one.
_open_clip_get_wds_dataset = oc_data.get_wds_dataset


class SkipCounts:
    """Counters of dropped samples, shared by the data-loader worker processes of one rank.

    The values live in shared memory (like open_clip's ``SharedEpoch``), so the workers'
    increments are visible to the training process, which reads and resets them per epoch.
    """

    FIELDS = ('no_caption_or_image', 'undecodable', 'lost_in_corrupt_shards', 'corrupt_shards')

    def __init__(self):
        self._values = {name: Value('q', 0) for name in self.FIELDS}

    def add(self, name: str, count: int = 1) -> None:
        value = self._values[name]
        with value.get_lock():
            value.value += count

    def snapshot(self) -> Dict[str, int]:
        return {name: value.value for name, value in self._values.items()}

    def reset(self) -> None:
        for value in self._values.values():
            with value.get_lock():
                value.value = 0

    @staticmethod
    def skipped(snapshot: Dict[str, int]) -> int:
        """Samples that never reached a batch (corrupt shards count only what ``sizes.json`` knows)."""
        return (snapshot['no_caption_or_image'] + snapshot['undecodable']
                + snapshot['lost_in_corrupt_shards'])


def _load_shard_sizes(shards: Iterable[str]) -> Dict[str, int]:
    """``{shard path: sample count}`` from the ``sizes.json`` next to the shards, where there is one."""
    sizes = {}
    for directory in sorted({os.path.dirname(shard) for shard in shards}):
        path = os.path.join(directory, 'sizes.json')
        if os.path.isfile(path):
            with open(path, encoding='utf-8') as f:
                for name, count in json.load(f).items():
                    sizes[os.path.join(directory, name)] = int(count)
    return sizes


def check_shard_count(num_shards: int, workers: int, world_size: int) -> None:
    """Raise when a loader worker would get no shard (open_clip only asserts, after building)."""
    needed = max(1, workers) * world_size
    if num_shards < needed:
        raise ValueError(
            f'--train-data expands to {num_shards} shard(s), but webdataset training needs at '
            f'least one shard per data-loader worker on every rank: --workers {workers} x world '
            f'size {world_size} = {needed}. Use fewer workers or ranks, split the data into more '
            f'shards, or pass --dataset-resampled.')


_REMOTE = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')  # pipe:..., s3://..., https://..., gs://...
_MISSING_SHOWN = 5


def check_shards_exist(shards: Sequence[str], pattern: str) -> None:
    """Raise when a local shard of ``--train-data`` (expanded to ``shards``) does not exist.

    Remote urls (``pipe:``, ``s3://``, ``https://``, ...) cannot be checked here and are left
    to the reader; a corrupt local shard is the reader's to skip and count.
    """
    local = [shard for shard in shards if not _REMOTE.match(shard) or shard.startswith('file:')]
    missing = [shard for shard in local if not os.path.isfile(shard.removeprefix('file:'))]
    if not missing:
        return
    shown = ', '.join(missing[:_MISSING_SHOWN]) + (', ...' if len(missing) > _MISSING_SHOWN else '')
    raise FileNotFoundError(
        f'--train-data {pattern!r} names {len(shards)} shard(s), of which {len(missing)} do not '
        f'exist: {shown}. Training would read only the rest. Download the missing shards or '
        f'narrow the pattern (e.g. the brace range) to the shards that exist.')


class ShardReader:
    """Pipeline stage: shard urls -> samples, skipping and counting corrupt or truncated tars.

    Replaces ``tarfile_to_samples_nothrow``: the same grouping of tar members into samples, but
    each shard is read on its own so that a read error is charged to the shard it came from.
    The stage object persists across the repeated passes that ``with_epoch`` makes, which lets it
    notice a pass that produced no sample at all and fail instead of looping forever.
    """

    def __init__(self, counts: SkipCounts, shard_sizes: Dict[str, int]):
        self.counts = counts
        self.shard_sizes = shard_sizes
        self.last_pass_was_empty = False

    def __call__(self, shards: Iterable[dict]) -> Iterator[dict]:
        if self.last_pass_was_empty:
            raise RuntimeError(
                'a data-loader worker read a full pass over its shards without getting one usable '
                'sample: every shard it was given is unreadable (see the warnings above)')
        delivered_in_pass = 0
        for shard in shards:
            url = shard['url']
            errors = []

            def handler(exn, errors=errors):
                errors.append(exn)
                return True

            files = tar_file_expander(url_opener([dict(shard)], handler=handler), handler=handler)
            delivered = 0
            for sample in oc_data.group_by_keys_nothrow(files, handler=handler):
                delivered += 1
                yield sample
            delivered_in_pass += delivered
            if errors:
                self._report_corrupt(url, delivered, errors[0])
        self.last_pass_was_empty = delivered_in_pass == 0

    def _report_corrupt(self, url: str, delivered: int, error: Exception) -> None:
        expected = self.shard_sizes.get(url)
        self.counts.add('corrupt_shards')
        if expected is None:
            lost = 'an unknown number of samples (no sizes.json entry)'
        else:
            self.counts.add('lost_in_corrupt_shards', max(0, expected - delivered))
            lost = f'{max(0, expected - delivered)} of its {expected} samples'
        what = ('missing shard' if isinstance(error, FileNotFoundError)  # deleted during the run
                else 'the rest of corrupt or truncated shard')
        logger.warning(f'Skipping {what} {url}: lost {lost} '
                       f'({type(error).__name__}: {error.args[0] if error.args else error})')


class _CountingFilter:
    """``filter_no_caption_or_no_image`` that counts what it drops."""

    def __init__(self, counts: SkipCounts):
        self.counts = counts

    def __call__(self, sample: dict) -> bool:
        keep = oc_data.filter_no_caption_or_no_image(sample)
        if not keep:
            self.counts.add('no_caption_or_image')
            logger.warning(f'Dropping sample {sample.get("__key__")} of {sample.get("__url__")}: '
                           f'it has no caption (.txt) or no image (.jpg/.jpeg/.png/.webp)')
        return keep


class _CountingDecodeHandler:
    """webdataset error handler for the decode stage: log, count, continue."""

    def __init__(self, counts: SkipCounts):
        self.counts = counts

    def __call__(self, exn: Exception) -> bool:
        self.counts.add('undecodable')
        logger.warning(f'Dropping a sample that does not decode ({exn!r})')
        return True


class CountingLoader:
    """The training loader plus an end-of-epoch report of the samples this rank skipped."""

    def __init__(self, loader, counts: SkipCounts, rank: int):
        self.loader = loader
        self.counts = counts
        self.rank = rank
        self.num_batches = loader.num_batches
        self.num_samples = loader.num_samples
        self.epoch_reports = []

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        self.counts.reset()
        yield from self.loader
        report = self.counts.snapshot()
        self.epoch_reports.append(report)
        skipped = SkipCounts.skipped(report)
        message = (f'Rank {self.rank}: skipped {skipped} sample(s) this epoch '
                   f'({report["no_caption_or_image"]} without caption or image, '
                   f'{report["undecodable"]} undecodable, {report["lost_in_corrupt_shards"]} lost in '
                   f'{report["corrupt_shards"]} corrupt shard read(s))')
        if skipped or report['corrupt_shards']:
            logger.warning(message)
        else:
            logger.info(message)


def get_wds_dataset(args, preprocess_img, is_train, epoch=0, floor=False, tokenizer=None):
    """Drop-in for ``open_clip_train.data.get_wds_dataset`` (same arguments, same ``DataInfo``)."""
    if not is_train:
        return _open_clip_get_wds_dataset(args, preprocess_img, is_train, epoch=epoch,
                                          floor=floor, tokenizer=tokenizer)
    input_shards = args.train_data
    resampled = getattr(args, 'dataset_resampled', False)
    shards, _ = oc_data.expand_urls(input_shards)
    check_shards_exist(shards, input_shards)
    if not resampled:
        check_shard_count(len(shards), args.workers, args.world_size)

    if args.train_num_samples is not None:
        num_samples = args.train_num_samples
    else:
        num_samples, _ = oc_data.get_dataset_size(input_shards)
        if not num_samples:
            raise ValueError(
                f'--train-num-samples is required: no sizes.json or __len__ file next to the '
                f'shards of --train-data {input_shards!r} says how many samples they hold')
    if args.train_data_upsampling_factors is not None and not resampled:
        raise ValueError('--train-data-upsampling-factors needs --dataset-resampled')

    counts = SkipCounts()
    shared_epoch = oc_data.SharedEpoch(epoch=epoch)
    if resampled:
        stages = [oc_data.ResampledShards2(input_shards, weights=args.train_data_upsampling_factors,
                                           deterministic=True, epoch=shared_epoch)]
    else:
        stages = [wds.SimpleShardList(input_shards),
                  oc_data.detshuffle2(bufsize=oc_data._SHARD_SHUFFLE_SIZE,
                                      initial=oc_data._SHARD_SHUFFLE_INITIAL,
                                      seed=args.seed, epoch=shared_epoch),
                  wds.split_by_node,
                  wds.split_by_worker]
    stages += [
        ShardReader(counts, _load_shard_sizes(shards)),
        wds.shuffle(bufsize=oc_data._SAMPLE_SHUFFLE_SIZE, initial=oc_data._SAMPLE_SHUFFLE_INITIAL),
        wds.select(_CountingFilter(counts)),
        wds.decode('pilrgb', handler=_CountingDecodeHandler(counts)),
        wds.rename(image='jpg;png;jpeg;webp', text='txt'),
        wds.map_dict(image=preprocess_img, text=lambda text: tokenizer(text)[0]),
        wds.to_tuple('image', 'text'),
        wds.batched(args.batch_size, partial=False),
    ]
    dataset = wds.DataPipeline(*stages)

    # Same epoch arithmetic as open_clip: every worker yields the same number of full batches.
    round_fn = math.floor if floor else math.ceil
    global_batch_size = args.batch_size * args.world_size
    num_workers = max(1, args.workers)
    num_worker_batches = round_fn(round_fn(num_samples / global_batch_size) / num_workers)
    num_batches = num_worker_batches * num_workers
    dataset = dataset.with_epoch(num_worker_batches)

    loader = wds.WebLoader(dataset, batch_size=None, shuffle=False, num_workers=args.workers,
                           persistent_workers=args.workers > 0)
    loader.num_batches = num_batches
    loader.num_samples = num_batches * global_batch_size
    return oc_data.DataInfo(dataloader=CountingLoader(loader, counts, args.rank),
                            shared_epoch=shared_epoch)

