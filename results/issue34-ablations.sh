#!/bin/bash
# Issue 34's ablations, at nanoGPT's CPU config on Shakespeare (as issue26-ablations.sh), with
# each recipe's optimizer its authors' since issue 34 (the recipe sets it; the schedule stays
# the command's): 1. the recipes as named, re-made; 2. what base_train.py's schedules of Muon's
# momentum and weight decay buy, and why its decay is scaled as the lab scales it.
# Run it as: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bash results/issue34-ablations.sh
# (issue26-ablations.sh says why). A stopped one goes on with: python cli.py ablate --resume DIR
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python}
BASE=(--mode tensor --data tinyshakespeare.txt --data-format text --n-embd 128 --n-head 4
      --n-layer 4 --block-size 64 --batch-size 12 --steps 2000 --lr 0.001 --lr-schedule cosine
      --warmup-steps 100 --min-lr 0.0001 --eval-every 250 --samples 0)
go() {  # go FOLDER ARGS...: start the ablation, or finish it if it was started
    if [ -e "results/$1/ablation.json" ]; then $PY cli.py ablate --resume "results/$1"
    else $PY cli.py ablate "${BASE[@]}" --out "results/$1" "${@:2}"; fi
}
# 1. The recipes as their authors wrote them, optimizers included (5 seeds)
go ablation-recipes-as-named --seeds 5 --init-std 0.02 --vary recipe=microgpt,gpt2,nanochat  # (microgpt's init at nanoGPT's std)
# 2. nanochat's recipe, its Muon's decay and momentum (3 seeds). --weight-decay W is scaled
#    by (B / 2^19) (D_ref / D) = 0.1566 at this model and batch (models.nanochat_weight_decay):
#    0.28 (the recipe's: 0.0439), 0 (none), 1.788 (0.28 itself, nanochat's at its own
#    reference), 7.316 (1.146: base_train.py's formula, which assumes the learning rates
#    scaled by sqrt(B / 2^19), here not); constant+0: a fixed momentum of 0.95, no decay
#    (the recipe before issue 34 without the base's --weight-decay)
go ablation-nanochat-muon-schedules --seeds 3 --recipe nanochat --variants untied-norm \
   --vary muon-schedule+weight-decay=nanochat+0.28,nanochat+0,nanochat+1.788,nanochat+7.316,constant+0
