#!/usr/bin/env bash
# GSPN-2 CLIP, the paper's recipe: a 1M-sample DataComp-1B subsample, global batch 8096,
# 12k steps, zero-shot ImageNet-1K at the end. 8 GPUs x 1012 images per GPU.
#
#   DATA=/data/datacomp1m/shards IMAGENET_VAL=/data/imagenet/val \
#       bash configs/clip/clip_gspn2-t_8xb1012-12k_datacomp1b-1m-224.sh
#
# Steps: --train-num-samples 971520 / global batch 8096 = 120 steps per epoch (with 8 loader
# workers per rank, 120 batches split evenly into 15 per worker); 100 epochs = 12,000 steps.
# The shard list must hold at least GPUS x WORKERS = 64 tars (img2dataset writes 10,000 samples
# per tar, so the 1M subsample is ~100 tars); NUM_SHARDS is the number of tars you have.
# MODEL=GSPN2-S or GSPN2-B runs the other sizes; GPUS=4 keeps the global batch at 8096.
# Any extra arguments are passed on to open_clip_train (e.g. --resume latest, --report-to tensorboard).
set -euo pipefail

MODEL=${MODEL:-GSPN2-T}
GPUS=${GPUS:-8}
WORKERS=${WORKERS:-8}
DATA=${DATA:?set DATA to the folder holding the DataComp shards (00000.tar ... and sizes.json)}
NUM_SHARDS=${NUM_SHARDS:-$(find "$DATA" -maxdepth 1 -name '*.tar' | wc -l)}
IMAGENET_VAL=${IMAGENET_VAL:-}
LOGS=${LOGS:-./work_dirs/clip}
NAME=${NAME:-clip_${MODEL}_${GPUS}xb$((8096 / GPUS))-12k_datacomp1b-1m-224}
GLOBAL_BATCH=8096

if (( GLOBAL_BATCH % GPUS != 0 )); then
    echo "GPUS=$GPUS does not divide the global batch $GLOBAL_BATCH" >&2; exit 1
fi
LAST=$(printf '%05d' $((NUM_SHARDS - 1)))
EVAL_ARGS=()
if [[ -n "$IMAGENET_VAL" ]]; then
    EVAL_ARGS=(--imagenet-val "$IMAGENET_VAL" --zeroshot-frequency 10)
fi

torchrun --nproc_per_node "$GPUS" tools/train_clip.py -- \
    --model "$MODEL" \
    --train-data "$DATA/{00000..$LAST}.tar" \
    --dataset-type webdataset \
    --train-num-samples 971520 \
    --batch-size $((GLOBAL_BATCH / GPUS)) \
    --epochs 100 \
    --workers "$WORKERS" \
    --precision amp_bf16 \
    --lr 5e-4 --wd 0.2 --beta1 0.9 --beta2 0.98 --eps 1e-6 --warmup 500 \
    --local-loss --gather-with-grad \
    --grad-checkpointing \
    --save-frequency 10 --save-most-recent \
    --logs "$LOGS" --name "$NAME" \
    --seed 0 \
    "${EVAL_ARGS[@]}" \
    "$@"
