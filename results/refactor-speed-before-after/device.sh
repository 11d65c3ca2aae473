#!/usr/bin/env bash
# On the 16-core machine (the `device` tool): the refactor's code against the code before it
# (58f6e96, in .base/), taking turns, native BLAS kernel; PyTorch at the same configs; and a
# profile of config C at 16 threads. Writes under $OUT: times.csv, torch.csv, machine.txt,
# profile-c16.txt. Steps are few (the machine's time is short): figures to compare, not to quote alone.
set -u
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
{ lscpu | head -20; python -c "import threadpoolctl, numpy, numba, torch; print(numpy.__version__, numba.__version__, torch.__version__); print(threadpoolctl.threadpool_info())"; } > $OUT/machine.txt 2>&1
S=$PWD/tinyshakespeare.txt
python -c "import tensorgpt; tensorgpt.warm_up('float32')" & (cd .base && python -c "import tensorgpt; tensorgpt.warm_up('float32')"); wait
A="--data $S --data-format text --n-embd 128 --n-head 4 --n-layer 4 --block-size 64 --batch-size 12 --length 0 --lr 1e-3"
B="--data $S --data-format text --n-embd 128 --n-head 4 --n-layer 4 --block-size 256 --batch-size 8 --length 0 --lr 1e-3"
C="--data $S --data-format text --n-embd 384 --n-head 6 --n-layer 6 --block-size 256 --batch-size 8 --length 0 --lr 1e-3"
echo "config,threads,code,repeat,tokens_per_s" > $OUT/times.csv
one() {  # config-name threads code repeat steps args...
  name=$1 threads=$2 code=$3 r=$4 steps=$5; shift 5
  dir=$([ $code = before ] && echo .base || echo .)
  out=/tmp/runs/$name-$threads-$code-$r
  (cd $dir && python $PWD/cli.py train --mode tensor "$@" --steps $steps --threads $threads --log-every 100000 --out $out > /dev/null 2>&1) 
  python -c "import json,sys; m=json.load(open('$out/metrics.json')); print('$name,$threads,$code,$r,%.0f' % m['tokens_per_s'])" >> $OUT/times.csv
}
for r in 1 2 3; do
  for code in before after; do one A 16 $code $r 150 $A; one B 16 $code $r 80 $B; done
done
for code in before after; do one A 2 $code 1 100 $A; one C 16 $code 1 25 $C; done
echo "config,threads,tokens_per_s" > $OUT/torch.csv
for cfg in A B C; do
  args=$(eval echo \$$cfg); steps=$([ $cfg = C ] && echo 25 || echo 100)
  t=$(python .torchref/torch_ref.py --text $(echo $args | sed 's/--data-format text//; s/--length 0//') --steps $steps --warmup 5 --threads 16 2>/dev/null | tail -1 | python -c "import json,sys; print('%.0f' % json.load(sys.stdin)['tokens_per_s'])")
  echo "$cfg,16,$t" >> $OUT/torch.csv
done
python -m cProfile -s tottime cli.py train --mode tensor $C --steps 20 --threads 16 --log-every 100000 --out /tmp/runs/prof > $OUT/profile-c16-raw.txt 2>&1
grep -A 45 "Ordered by" $OUT/profile-c16-raw.txt > $OUT/profile-c16.txt
cat $OUT/times.csv $OUT/torch.csv
