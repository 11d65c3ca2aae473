#!/bin/bash
# Issue 35's ablation: characters against byte-level BPE at three vocabulary sizes, each BPE
# trained on the run's own training part (the first 90% of the text), at nanoGPT's CPU config
# on Shakespeare as results/shakespeare-nanogpt-cpu ran it (tied lm_head, init std 0.02, AdamW
# 0.9/0.99, decay 0.1, clipping 1.0), the same steps and batch of sequences: 12 windows of 64
# tokens a step, so a BPE step reads more of the text. 5 seeds; compared in bits per byte.
# Run it as: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bash results/issue35-ablations.sh
# (issue26-ablations.sh says why). A stopped one goes on with: python cli.py ablate --resume DIR
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python}
BASE=(--mode tensor --data tinyshakespeare.txt --data-format text --n-embd 128 --n-head 4
      --n-layer 4 --block-size 64 --batch-size 12 --steps 2000 --lr 0.001 --lr-schedule cosine
      --warmup-steps 100 --min-lr 0.0001 --eval-every 250 --samples 0
      --init-std 0.02 --beta1 0.9 --weight-decay 0.1 --grad-clip 1.0)
go() {  # go FOLDER ARGS...: start the ablation, or finish it if it was started
    if [ -e "results/$1/ablation.json" ]; then $PY cli.py ablate --resume "results/$1"
    else $PY cli.py ablate "${BASE[@]}" --out "results/$1" "${@:2}"; fi
}
go ablation-tokenizers-shakespeare --seeds 5 --variants tied-norm \
   --vary tokenizer+vocab-size=char+auto,bpe+512,bpe+1024,bpe+2048
