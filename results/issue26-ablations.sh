#!/bin/bash
# Issue 26's ablations, at nanoGPT's CPU config on Shakespeare (as results/shakespeare-nanogpt-cpu),
# 5 seeds each, one thread a run, --jobs as the cores allow. Each one that is stopped goes on
# with: python cli.py ablate --resume results/<its folder>
# Every run here took OpenBLAS's SkylakeX kernel (AVX-512), the one it chooses on an AVX-512
# CPU when nothing pins it: float32 runs re-run bit for bit on that kernel (one made on an
# earlier machine did on a 2-core EPYC, family 26 model 2) and differ in their last bits on
# another (on Haswell's, from step 28 of 2000). Where the environment pins a kernel
# (OPENBLAS_CORETYPE), run it as: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bash
# results/issue26-ablations.sh. `ablate --resume` says when its runs took another kernel.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python}
BASE=(--mode tensor --data tinyshakespeare.txt --data-format text --n-embd 128 --n-head 4
      --n-layer 4 --block-size 64 --batch-size 12 --steps 2000 --lr 0.001 --lr-schedule cosine
      --warmup-steps 100 --min-lr 0.0001 --beta1 0.9 --beta2 0.99 --weight-decay 0.1
      --grad-clip 1.0 --eval-every 250 --init-std 0.02 --samples 0 --seeds 5)
go() {  # go FOLDER ARGS...: start the ablation, or finish it if it was started
    if [ -e "results/$1/ablation.json" ]; then $PY cli.py ablate --resume "results/$1"
    else $PY cli.py ablate "${BASE[@]}" --out "results/$1" "${@:2}"; fi
}
# 1. The recipes as their authors wrote them: re-made by issue 34, when each recipe's
#    optimizer became its authors' (results/issue34-ablations.sh)
# 2. Each new choice alone against microgpt's blocks
go ablation-choices-alone --design alone --variants untied-norm --vary bias=off,on \
   --vary init=microgpt,gpt2,nanochat --vary softcap=0,15 --vary qk-scale=1,1.2 \
   --vary norm-eps=1e-05,1.1920928955078125e-07 --vary n-kv-head=auto,1 \
   --vary value-embeddings=off,on --vary residual-scalars=off,on --vary optimizer=adamw,muon \
   --vary position+rope-base=learned+10000,rope+10000,rope+100000
# 3. Muon against AdamW, each at three learning rates
go ablation-muon-vs-adamw --variants untied-norm \
   --vary optimizer+lr+muon-lr=adamw+0.0005+0.02,adamw+0.001+0.02,adamw+0.002+0.02,muon+0.001+0.01,muon+0.001+0.02,muon+0.001+0.04
# 3b. Past the three: AdamW's best of them was its largest, so larger ones; Muon's its smallest
go ablation-muon-vs-adamw-beyond --variants untied-norm \
   --vary optimizer+lr+muon-lr=muon+0.001+0.01,muon+0.001+0.005,adamw+0.004+0.02,adamw+0.008+0.02,adamw+0.016+0.02
# 4. The path from microgpt's blocks to nanochat's, one change at a time
go ablation-path-microgpt-to-nanochat --design path --variants untied-norm \
   --vary activation=relu,relu2 --vary position=learned,rope --vary rope-base=10000,100000 \
   --vary qk-norm=off,on --vary qk-scale=1,1.2 --vary final-norm=off,on --vary softcap=0,15 \
   --vary norm-eps=1e-05,1.1920928955078125e-07 --vary value-embeddings=off,on \
   --vary residual-scalars=off,on --vary init=microgpt,nanochat --vary optimizer=adamw,muon
