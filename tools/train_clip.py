"""Train CLIP with a GSPN-2 image tower through ``open_clip_train`` (every flag of it works).

    python tools/train_clip.py --model GSPN2-T --train-data 'shards/{00000..00099}.tar' \
        --dataset-type webdataset --train-num-samples 971520 --batch-size 1012 ...
    torchrun --nproc_per_node 8 tools/train_clip.py -- --model GSPN2-T ...

(under torchrun, put ``--`` before the arguments: torchrun's own parser takes ``--logs`` for an
abbreviation of its ``--logs-specs``). See docs/clip.md and configs/clip/.
"""
import sys

from gspn2_dense.clip.train import main

if __name__ == '__main__':
    sys.exit(1 if main(sys.argv[1:]) == -1 else 0)
