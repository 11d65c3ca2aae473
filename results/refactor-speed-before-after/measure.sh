#!/usr/bin/env bash
# Issue 24's refactor against the code before it (58f6e96), taking turns, 3 repeats each:
# tensor mode's tokens/s at three configs, native BLAS kernel, 2 threads. REPEATS (default 3)
# and CONFIGS (names, A, B) choose.
# Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bash measure.sh BEFORE_CHECKOUT AFTER_CHECKOUT OUT.csv
set -eu
before=$1; after=$2; out=$3
py=${PYTHON:-python}
S=$after/tinyshakespeare.txt
configs=(
  "names --mode tensor --steps 2000 --samples 0"
  "A --mode tensor --data $S --data-format text --n-embd 128 --n-head 4 --n-layer 4 --block-size 64 --batch-size 12 --steps 300 --length 0 --lr 1e-3"
  "B --mode tensor --data $S --data-format text --n-embd 128 --n-head 4 --n-layer 4 --block-size 256 --batch-size 8 --steps 150 --length 0 --lr 1e-3"
)
echo "config,code,repeat,tokens_per_s,steps_per_s" > "$out"
tmp=$(mktemp -d)
for r in $(seq 1 ${REPEATS:-3}); do
  for c in "${configs[@]}"; do
    set -- $c; name=$1; shift
    case " ${CONFIGS:-names A B} " in *" $name "*) ;; *) continue ;; esac
    for code in before after; do
      dir=$([ $code = before ] && echo "$before" || echo "$after")
      (cd "$dir" && $py cli.py train "$@" --threads 2 --log-every 100000 --out "$tmp/$name-$code-$r" > /dev/null)
      $py - "$tmp/$name-$code-$r/metrics.json" "$name" "$code" "$r" >> "$out" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]},{sys.argv[3]},{sys.argv[4]},{m['tokens_per_s']:.0f},{m['steps_per_s']:.2f}")
PY
    done
  done
done
rm -rf "$tmp"
