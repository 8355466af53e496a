"""Zero-shot classification of an ImageNet-style folder with a trained CLIP model.

The folder holds one subfolder per class (for ImageNet-1K: the 1000 WordNet ids, whose sorted
order is the order of open_clip's ``IMAGENET_CLASSNAMES``). Each class is embedded with open_clip's
OpenAI prompt templates (``OPENAI_IMAGENET_TEMPLATES``), averaged and normalised
(``open_clip.build_zero_shot_classifier``); images are classified by cosine similarity.
Top-k accuracy is counted in torch here; open_clip_train's own ``accuracy()`` goes through numpy
and fails on numpy >= 2.4.
"""
import os
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

__all__ = ['build_classifier', 'evaluate', 'load_classnames', 'topk_correct', 'zero_shot']


def load_classnames(val_dir: str, classnames_file: Optional[str] = None) -> List[str]:
    """Class names in the order of ``val_dir``'s sorted subfolders (torchvision ImageFolder order).

    ``classnames_file`` has one name per line, line i naming the i-th subfolder; without it the
    folder must be ImageNet-1K's 1000 WordNet-id folders and open_clip's names are used.
    """
    from open_clip import IMAGENET_CLASSNAMES

    if not os.path.isdir(val_dir):
        raise FileNotFoundError(f'validation folder {val_dir!r} does not exist')
    folders = sorted(entry.name for entry in os.scandir(val_dir) if entry.is_dir())
    if classnames_file is None:
        if len(folders) != len(IMAGENET_CLASSNAMES):
            raise ValueError(
                f'{val_dir} has {len(folders)} class folder(s); open_clip\'s ImageNet class names '
                f'need the {len(IMAGENET_CLASSNAMES)} WordNet-id folders of ImageNet-1K. Pass '
                f'--classnames FILE (one name per line, in sorted folder order) for another label set')
        return list(IMAGENET_CLASSNAMES)
    with open(classnames_file, encoding='utf-8') as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != len(folders):
        raise ValueError(f'{classnames_file} names {len(names)} class(es), but {val_dir} has '
                         f'{len(folders)} class folder(s); expected one name per folder, in '
                         f'sorted folder order')
    return names


def build_classifier(model: nn.Module, tokenizer, classnames: Sequence[str],
                     templates: Optional[Sequence] = None, device='cpu',
                     progress: bool = False) -> torch.Tensor:
    """``(embed_dim, num_classes)`` text embeddings of the prompts, one column per class."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES, build_zero_shot_classifier

    return build_zero_shot_classifier(
        model, tokenizer=tokenizer, classnames=list(classnames),
        templates=list(templates or OPENAI_IMAGENET_TEMPLATES), num_classes_per_batch=10,
        device=device, use_tqdm=progress)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> List[int]:
    """How many rows of ``logits`` have their target among the k best scores, for each k."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f'expected logits (N, K) and targets (N,), got {tuple(logits.shape)} '
                         f'and {tuple(targets.shape)}')
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = ranked == targets[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, classifier: torch.Tensor, loader, device='cpu',
             progress: bool = True) -> Dict[str, float]:
    """Top-1 / top-5 accuracy of ``model.encode_image`` features against ``classifier`` columns."""
    model.eval()
    correct1 = correct5 = seen = 0
    for images, targets in tqdm(loader, desc='zero-shot', unit='batch', disable=not progress):
        features = model.encode_image(images.to(device), normalize=True)
        logits = features @ classifier.to(features.dtype)
        top1, top5 = topk_correct(logits, targets.to(device), (1, 5))
        correct1, correct5, seen = correct1 + top1, correct5 + top5, seen + len(targets)
    if seen == 0:
        raise ValueError('the validation loader yielded no image')
    return {'top1': correct1 / seen, 'top5': correct5 / seen, 'num_images': seen}


def zero_shot(checkpoint: Optional[str], model_name: str, val_dir: str,
              classnames_file: Optional[str] = None, batch_size: int = 64, workers: int = 2,
              device: str = 'cpu', progress: bool = True) -> Dict[str, object]:
    """Load ``checkpoint`` into open_clip model ``model_name`` and evaluate it on ``val_dir``.

    ``checkpoint=None`` evaluates the randomly initialised model (a chance-level baseline).
    """
    import open_clip
    from torchvision.datasets import ImageFolder

    from . import register_model_configs
    from .checkpoint import load_clip_weights

    register_model_configs()
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'CLIP checkpoint {checkpoint!r} does not exist')
    classnames = load_classnames(val_dir, classnames_file)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, device=device)
    if checkpoint is not None:
        load_clip_weights(model, checkpoint, model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    dataset = ImageFolder(val_dir, transform=preprocess)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    model.eval()
    classifier = build_classifier(model, tokenizer, classnames, device=device, progress=progress)
    result = evaluate(model, classifier, loader, device=device, progress=progress)
    return {'model': model_name, 'checkpoint': checkpoint, 'val': val_dir,
            'num_classes': len(classnames), 'chance_top1': 1.0 / len(classnames),
            'chance_top5': min(5, len(classnames)) / len(classnames), **result}
