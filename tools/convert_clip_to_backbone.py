"""Extract the GSPN-2 image tower of a CLIP checkpoint as a backbone checkpoint.

    python tools/convert_clip_to_backbone.py logs/run/checkpoints/epoch_100.pt gspn2_tiny_clip.pth

The output is the model file's ``checkpoint_filter_fn`` of the CLIP checkpoint, saved
(:func:`gspn2_dense.clip.checkpoint.convert_clip_to_backbone`). It loads with
``timm.create_model('gspn2_tiny', pretrained=True,
pretrained_cfg_overlay=dict(file='gspn2_tiny_clip.pth'))`` (the classifier head, absent from the
file, keeps its initialisation; pass ``num_classes=0`` for a headless model) and as
``init_cfg=dict(type='Pretrained', checkpoint='gspn2_tiny_clip.pth')`` of the mmseg ``GSPN2``
backbone, i.e. in every linear-probe config. The output is written atomically; the tool refuses
to write onto its input, and onto an existing file unless ``--force`` is given.
"""
import argparse

from gspn2_dense.clip.checkpoint import convert_clip_to_backbone
from gspn2_dense.engine.checkpoint import CheckpointError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='open_clip_train checkpoint or CLIP state dict')
    parser.add_argument('dst', help='backbone checkpoint to write')
    parser.add_argument('--force', action='store_true', help='replace an existing output file')
    args = parser.parse_args(argv)
    try:
        trunk = convert_clip_to_backbone(args.src, args.dst, overwrite=args.force)
    except (CheckpointError, FileNotFoundError, FileExistsError, IsADirectoryError) as err:
        parser.exit(1, f'{parser.prog}: error: {err}\n')
    print(f'wrote {len(trunk)} image-tower tensors '
          f'({sum(t.numel() for t in trunk.values()):,} values) to {args.dst}')


if __name__ == '__main__':
    main()
