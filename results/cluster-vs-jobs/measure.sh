#!/usr/bin/env bash
# ablate on a local two-worker Dask cluster against ablate --jobs 2, taking turns, 3 times
# each, on two grids: the reference config's (4 variants x 5 seeds, 1000 steps a run) and
# tiny runs (4 variants x 10 seeds, 1 step a run, 10 validation names: the cost of a task
# with hardly any training in it). Writes times.csv and results.md here, and prints them.
# From the project's root, with the cluster extra installed, the BLAS pin removed:
#   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bash results/cluster-vs-jobs/measure.sh
set -euo pipefail
here=results/cluster-vs-jobs
python=${PYTHON:-python}
dask="$(dirname "$(command -v "$python")")/dask"
tmp=$(mktemp -d)
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
address=tcp://127.0.0.1:$port
"$dask" scheduler --host 127.0.0.1 --port "$port" --no-dashboard 2>"$tmp/scheduler.log" &
pids=$!
trap 'kill $pids 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 2
for w in 1 2; do  # as the README starts them: one thread each, with a nanny
  "$dask" worker "$address" --nthreads 1 --no-dashboard --name "w$w" 2>"$tmp/w$w.log" &
  pids="$pids $!"
done
sleep 5

reference=(--mode tensor --seeds 5)
tiny=(--mode tensor --seeds 10 --steps 1 --samples 0 --val-docs 10)
echo "grid,contender,repeat,seconds,runs" > "$here/times.csv"
for repeat in 1 2 3; do
  for grid in reference tiny; do
    for contender in jobs cluster; do
      declare -n options=$grid
      how=(--jobs 2); [ "$contender" = cluster ] && how=(--cluster "$address")
      start=$(date +%s%N)
      "$python" cli.py ablate "${options[@]}" "${how[@]}" --out "$tmp/$grid-$contender-$repeat" >"$tmp/log" 2>&1 \
        || { cat "$tmp/log"; exit 1; }
      end=$(date +%s%N)
      runs=$(ls "$tmp/$grid-$contender-$repeat/runs" | wc -l)
      echo "$grid,$contender,$repeat,$(echo "scale=3; ($end - $start) / 1000000000" | bc),$runs" | tee -a "$here/times.csv"
    done
  done
done
"$python" - "$here" <<'PY'
import csv, statistics, sys
here = sys.argv[1]
rows = list(csv.DictReader(open(f"{here}/times.csv")))
med = lambda g, c: statistics.median(float(r['seconds']) for r in rows if r['grid'] == g and r['contender'] == c)
runs = lambda g: int(next(r['runs'] for r in rows if r['grid'] == g))
lines = ["| grid | runs | --jobs 2, s | --cluster (2 workers), s | cluster / jobs | per run: jobs, cluster (s) |",
         "| --- | --- | --- | --- | --- | --- |"]
for g in ('reference', 'tiny'):
    j, c = med(g, 'jobs'), med(g, 'cluster')
    lines.append(f"| {g} | {runs(g)} | {j:.2f} | {c:.2f} | {c / j:.2f} | {2 * j / runs(g):.3f}, {2 * c / runs(g):.3f} |")
import numpy, threadpoolctl  # which BLAS kernel ran (SkylakeX unless pinned)
kernels = sorted({p.get('architecture') for p in threadpoolctl.threadpool_info()} - {None})
lines += ["", "Medians of 3, taking turns. Per run: wall time x 2 workers / runs. "
          f"BLAS kernel: {', '.join(kernels)}; numpy {numpy.__version__}."]
open(f"{here}/results.md", 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
PY
