"""Synthetic CLIP data in DataComp's shard layout, with captions that describe the images.

Each image is one coloured shape (``red circle``, ``blue triangle``, ...) at a random position
and size on a noisy grey background; its caption is one of open_clip's OpenAI prompt templates
filled with that description (``"a bad photo of a red circle."``), so a contrastive model can
learn the pairing and zero-shot classification with the same templates is meaningful.

Training shards follow img2dataset / DataComp: ``{shard:05d}.tar`` holding ``{key}.jpg``,
``{key}.txt`` and ``{key}.json`` per sample (key = shard id and index, 9 digits), plus
``sizes.json`` mapping each tar to its sample count. The validation set is an ImageNet-style
folder (one subfolder per class, named like WordNet ids) with ``classnames.txt`` next to it.
"""
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from PIL import Image, ImageDraw, ImageFilter

__all__ = ['COLORS', 'SHAPES', 'DemoData', 'class_descriptions', 'draw_sample', 'make_clip_shards',
           'write_shard']

COLORS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 30, 30),
    'green': (30, 170, 40),
    'blue': (30, 60, 220),
    'yellow': (240, 220, 30),
}
SHAPES = ('circle', 'square', 'triangle')


@dataclass
class DemoData:
    shards: List[str]
    train_pattern: str      # brace pattern for --train-data
    num_samples: int
    val_dir: str
    classnames_file: str


def class_descriptions() -> List[str]:
    """Every ``'{color} {shape}'`` the generator draws, in class-index order."""
    return [f'{color} {shape}' for color in COLORS for shape in SHAPES]


def draw_sample(description: str, size: int, rng: random.Random) -> Image.Image:
    """One image of ``description`` (``'{color} {shape}'``)."""
    color_name, shape = description.split(' ')
    grey = rng.randint(70, 190)
    image = Image.new('RGB', (size, size), (grey, grey, grey))
    noise = Image.effect_noise((size, size), rng.uniform(10, 30)).convert('RGB')
    image = Image.blend(image, noise, 0.25)
    extent = rng.uniform(0.35, 0.7) * size
    x0 = rng.uniform(0, size - extent)
    y0 = rng.uniform(0, size - extent)
    box = (x0, y0, x0 + extent, y0 + extent)
    color = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLORS[color_name])
    draw = ImageDraw.Draw(image)
    if shape == 'circle':
        draw.ellipse(box, fill=color)
    elif shape == 'square':
        draw.rectangle(box, fill=color)
    elif shape == 'triangle':
        draw.polygon([(x0 + extent / 2, y0), (x0, y0 + extent), (x0 + extent, y0 + extent)],
                     fill=color)
    else:
        raise ValueError(f'unknown shape {shape!r}; expected one of {SHAPES}')
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', quality=90)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(payload))


def write_shard(path: str, samples: Iterable[Tuple[str, Image.Image, Optional[str]]]) -> int:
    """Write ``(key, image, caption)`` samples as one img2dataset tar; ``caption=None`` leaves
    out the ``.txt`` (as a failed caption download would). Returns the number of samples."""
    count = 0
    with tarfile.open(path, 'w') as tar:
        for key, image, caption in samples:
            _add_member(tar, f'{key}.jpg', _jpeg(image))
            if caption is not None:
                _add_member(tar, f'{key}.txt', caption.encode('utf-8'))
            meta = {'key': key, 'caption': caption, 'status': 'success', 'error_message': None,
                    'width': image.width, 'height': image.height,
                    'url': f'synthetic://{key}.jpg'}
            _add_member(tar, f'{key}.json', json.dumps(meta).encode('utf-8'))
            count += 1
    return count


def make_clip_shards(out_dir: str, num_shards: int = 8, samples_per_shard: int = 250,
                   val_per_class: int = 10, image_size: int = 64, seed: int = 0) -> DemoData:
    """Write training shards to ``out_dir/shards`` and the validation folder to ``out_dir/val``."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    if num_shards < 1 or samples_per_shard < 1 or val_per_class < 1:
        raise ValueError(f'expected num_shards, samples_per_shard and val_per_class >= 1, got '
                         f'{num_shards}, {samples_per_shard} and {val_per_class}')
    rng = random.Random(seed)
    descriptions = class_descriptions()
    shard_dir = os.path.join(out_dir, 'shards')
    os.makedirs(shard_dir, exist_ok=True)
    shards, sizes = [], {}
    for shard_id in range(num_shards):
        samples = []
        for index in range(samples_per_shard):
            description = rng.choice(descriptions)
            caption = rng.choice(OPENAI_IMAGENET_TEMPLATES)(description)
            image = draw_sample(description, image_size, rng)
            samples.append((f'{shard_id:05d}{index:04d}', image, caption))
        name = f'{shard_id:05d}.tar'
        sizes[name] = write_shard(os.path.join(shard_dir, name), samples)
        shards.append(os.path.join(shard_dir, name))
    with open(os.path.join(shard_dir, 'sizes.json'), 'w', encoding='utf-8') as f:
        json.dump(sizes, f, indent=1)

    val_dir = os.path.join(out_dir, 'val')
    for class_index, description in enumerate(descriptions):
        class_dir = os.path.join(val_dir, f'n{90000000 + class_index:08d}')
        os.makedirs(class_dir, exist_ok=True)
        for index in range(val_per_class):
            draw_sample(description, image_size, rng).save(
                os.path.join(class_dir, f'{class_index:03d}_{index:04d}.jpg'), quality=90)
    classnames_file = os.path.join(out_dir, 'classnames.txt')
    with open(classnames_file, 'w', encoding='utf-8') as f:
        f.write('\n'.join(descriptions) + '\n')
    last = num_shards - 1
    pattern = os.path.join(shard_dir, f'{{00000..{last:05d}}}.tar' if last else '00000.tar')
    return DemoData(shards=shards, train_pattern=pattern, num_samples=sum(sizes.values()),
                    val_dir=val_dir, classnames_file=classnames_file)
