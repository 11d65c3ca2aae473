#!/bin/bash
# Issue 36's starting point on a 2-core Intel Xeon (AVX-512): configs A, B and C (as
# results/threads-2core/measure.sh) against PyTorch at 1 and 2 threads, taking turns, with the
# native BLAS kernel. Usage, from the repository root:
#   bash results/issue36-baseline-xeon2/measure.sh PYTHON_WITH_TORCH
set -euo pipefail
torch=$1
here=results/issue36-baseline-xeon2
lscpu > $here/machine.txt
common="--data tinyshakespeare.txt --data-format text --torch $torch --lr 1e-3 --tie-lm-head --init-std 0.02 --vary threads=1,2"
bench() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python cli.py bench $common "$@"; }
bench --n-embd 128 --n-layer 4 --block-size 64 --batch-size 12 --bench-steps 100 --warmup 10 --repeats 5 --out $here/bench-A
bench --n-embd 128 --n-layer 4 --block-size 256 --batch-size 8 --bench-steps 40 --warmup 10 --repeats 5 --out $here/bench-B
bench --n-embd 384 --n-head 6 --n-layer 6 --block-size 256 --batch-size 8 --bench-steps 20 --warmup 5 --repeats 3 --out $here/bench-C
