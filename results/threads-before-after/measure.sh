#!/bin/bash
# Issue 25's code against the code before it (4d3b93d), taking turns on one machine: the
# speedrun record re-run with `train --from` by each, 3 times, with the native BLAS kernel.
# Each re-run's losses must equal the committed record's, bit for bit.
# Usage (from the repository root): bash results/threads-before-after/measure.sh BEFORE_CHECKOUT
set -euo pipefail
before=$1 here=$(pwd) py=$(pwd)/.venv/bin/python out=$(mktemp -d)
echo "code,round,tokens_per_s,train_time_s,losses_equal_the_record" > results/threads-before-after/speedrun.csv
for round in 1 2 3; do
  for code in before after; do
    dir=$here; [ $code = before ] && dir=$before
    (cd "$dir" && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" cli.py train --from "$here/results/shakespeare-speedrun" --out "$out/$code$round" > /dev/null)
    same=$(cmp -s "$out/$code$round/losses.csv" results/shakespeare-speedrun/losses.csv && echo yes || echo no)
    "$py" -c "import json,sys; m=json.load(open('$out/$code$round/metrics.json')); print(f\"$code,$round,{m['tokens_per_s']:.0f},{m['train_time_s']:.2f},$same\")" >> results/threads-before-after/speedrun.csv
  done
done
cat results/threads-before-after/speedrun.csv
rm -rf "$out"
