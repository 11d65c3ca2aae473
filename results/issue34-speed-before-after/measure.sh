#!/bin/bash
# Issue 34's redesign against the code before it (e0f114a), on one machine, native BLAS kernel:
# 1. steps.py: the step time of configs A, B, C, A with nanochat's blocks, and A with each of
#    the three choices rebuilt of general ops, the two codes in one process taking turns;
# 2. the speedrun record re-run with `train --from` by each code, taking turns, 3 times; each
#    re-run's losses must equal the first re-run's by the code before, bit for bit (and the
#    committed record's, on a machine that runs its BLAS kernel on its CPU).
# Usage (from the repository root): bash results/issue34-speed-before-after/measure.sh BEFORE_CHECKOUT
set -euo pipefail
before=$1 here=$(pwd) py=$(pwd)/.venv/bin/python out=$(mktemp -d) dir=results/issue34-speed-before-after
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" $dir/steps.py "$before/tensorgpt.py" tensorgpt.py 2 20 | tee $dir/steps-2threads.txt
echo "code,round,tokens_per_s,train_time_s,losses_equal_before,losses_equal_the_record" > $dir/speedrun.csv
for round in 1 2 3; do
  for code in before after; do
    src=$here; [ $code = before ] && src=$before
    (cd "$src" && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" cli.py train --from "$here/results/shakespeare-speedrun" --out "$out/$code$round" > /dev/null)
    same=$(cmp -s "$out/$code$round/losses.csv" "$out/before1/losses.csv" && echo yes || echo no)
    same="$same,$(cmp -s "$out/$code$round/losses.csv" results/shakespeare-speedrun/losses.csv && echo yes || echo no)"
    "$py" -c "import json; m=json.load(open('$out/$code$round/metrics.json')); print(f\"$code,$round,{m['tokens_per_s']:.0f},{m['train_time_s']:.2f},$same\")" >> $dir/speedrun.csv
  done
done
cat $dir/speedrun.csv
rm -rf "$out"
