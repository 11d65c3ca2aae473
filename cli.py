"""microgpt-lab: train, sample, ablate and benchmark a GPT written from scratch, in scalar
mode (microgpt.py, pure Python) or tensor mode (tensorgpt.py, NumPy and numba).

Usage:
  cli.py train [options]
  cli.py sample --checkpoint PATH [options]
  cli.py ablate [options]
  cli.py bench [options]
  cli.py -h | --help

Commands:
  train   Train a model: print a line per step (loss, steps/s, time left), a summary and
          samples, and write a run record to --out: config.json, metrics.json,
          losses.csv, samples.txt and checkpoint.json.
  sample  Print samples from a checkpoint written by train (in either mode).
  ablate  Train the four variants, tied/untied lm_head x input rmsnorm on/off, with the
          same seeds, data and settings (every train option applies), and write a
          summary (JSON, CSV, a markdown table, a plot of the loss curves).
  bench   Time scalar and tensor mode side by side on the same data, seed and steps:
          a warm-up first, then --repeats timed runs each; medians and ranges.

Data options:
  --data PATH         The documents: a UTF-8 text file, one document a line (blank lines
                      are skipped). When this file is missing, makemore's names.txt is
                      downloaded to it (pinned commit, sha256 checked) [default: input.txt]
  --no-fetch          Never download: a missing --data file is an error.
  --val-fraction F    Share of the shuffled documents held out for validation [default: 0.1]

Model options:
  --n-embd N          Embedding width [default: 16]
  --n-head N          Attention heads; must divide --n-embd [default: 4]
  --n-layer N         Transformer blocks [default: 1]
  --block-size N      Longest context, in tokens [default: 16]
  --tie-lm-head       Compute the logits with wte (no separate lm_head matrix).
  --no-input-rmsnorm  Skip the rmsnorm of the token + position embedding.

Training options:
  --mode MODE         scalar or tensor [default: scalar]
  --seed S            Seed of the one random generator that shuffles the documents, draws
                      the weights and then the samples. train, ablate, bench: 42. sample:
                      none continues the training run's generator, so that its first
                      samples are the ones train printed.
  --steps N           Training steps; the learning rate decays to 0 over them [default: 1000]
  --lr LR             Adam learning rate [default: 0.01]
  --batch-size B      Documents per step in tensor mode (scalar mode trains on one
                      document a step) [default: 32]
  --dtype DTYPE       float32 or float64, in tensor mode [default: float32]
  --eval-every N      Also report the validation loss every N steps (0: only at the
                      end) [default: 0]
  --val-docs N        Validation documents to evaluate, the first N held out; auto: all
                      in tensor mode, 200 in scalar mode [default: auto]
  --last-n N          The summary's mean loss is over the last N steps [default: 100]
  --log-every N       Print a step line every N steps (the first and last always print);
                      auto: every step in scalar mode, 100 lines a run in tensor
                      mode [default: auto]
  --samples N         Samples to print after training [default: 20]
  --temperature T     Sampling temperature, > 0; lower is more conservative [default: 0.5]
  --out DIR           Folder for the run record (ablate: the ablation, bench: the
                      results); it must not hold one already [default: auto]

Run options (train):
  --stop-after N      Stop after step N, keeping a checkpoint to --resume from; the
                      learning rate schedule still spans --steps.
  --resume DIR        train: continue the stopped or interrupted run recorded in DIR
                      (weights, Adam state, step, generator), writing a new record with
                      all its steps. ablate: finish the ablation in DIR, skipping the
                      runs already done. No other option but --out (train) or --jobs
                      (ablate) may be given.
  --from DIR          Re-run the run recorded in DIR/config.json, with the same settings
                      and data (checked by sha256). No other option but --out.

Sample options:
  --checkpoint PATH   A checkpoint.json written by train.
  --num N             Samples to print [default: 20]
  --prompt TEXT       Begin every sample with TEXT and continue it [default: ]
  --batched           Tensor mode: draw all samples at once, one forward pass a position
                      for all. Much faster for many samples, but the random draws come in
                      another order, so the samples differ from one-at-a-time sampling.

Ablation options:
  --seeds K           Run every variant with seeds S, S+1, ..., S+K-1 [default: 1]
  --jobs N            Runs in parallel processes; results do not depend on it; auto:
                      the number of cores [default: auto]

Bench options:
  --bench-steps N     Timed steps of each run, after --warmup untimed ones [default: 100]
  --warmup N          Untimed steps at the start of each run [default: 10]
  --repeats R         Timed runs of each configuration, alternating [default: 3]
  --threads T         Threads for numba (and PyTorch) [default: 2]
  --no-scalar         Leave scalar mode out (for models too big for it).
  --torch PYTHON      Also run ../shared/bench/torch_ref.py with this Python (one with
                      PyTorch), alternating with ours, and report the ratios.

Exit status: 0 on success; 1 on an error (one line on stderr, no traceback, no
half-written file); 2 when training diverges (the record up to that step is kept);
130 when interrupted with Ctrl-C (finished work is kept, and --resume continues it).
"""
import base64
import concurrent.futures
import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata

import numpy as np
from docopt import DocoptExit, docopt

import data

ROOT = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = 'microgpt-lab checkpoint', 1
MODEL_KEYS = ('vocab_size', 'n_embd', 'n_head', 'n_layer', 'block_size', 'tie_lm_head',
              'input_rmsnorm')
ADAM = dict(beta1=0.85, beta2=0.99, eps=1e-8)  # the reference's, fixed; recorded in config.json
# The ablation's four variants, (tie_lm_head, input_rmsnorm); the first is the reference.
VARIANTS = {'untied-norm': (False, True), 'tied-norm': (True, True),
            'untied-nonorm': (False, False), 'tied-nonorm': (True, False)}


class UserError(Exception):
    """Anything a user can get wrong, told in one line."""


# ---------------------------------------------------------------------------
# Arguments: docopt parses the usage above; which options each command takes, and every
# conversion and check of a value, happen here, in one place.
def option_sections(doc=__doc__):
    """{'data': {'--data', ...}, 'model': ..., ...}: the options under each '... options' heading."""
    sections, current = {}, None
    for line in doc.splitlines():
        heading = re.match(r'(\w+) options', line)
        if heading:
            current = sections.setdefault(heading.group(1).lower(), set())
        elif current is not None and re.match(r'  --', line):
            current.add(line.split()[0])
    return sections


def allowed_options(command, argv):
    s = option_sections()
    recorded = [a for a in argv if a in ('--resume', '--from')]
    if command == 'train' and recorded:  # a recorded run's settings: nothing may change them
        return {recorded[0], '--out'}
    if command == 'ablate' and '--resume' in argv:
        return {'--resume', '--jobs'}
    return {
        'train': s['data'] | s['model'] | s['training'] | {'--stop-after', '--from', '--resume'},
        'ablate': (s['data'] | s['model'] | s['training'] | s['ablation'])
        - {'--tie-lm-head', '--no-input-rmsnorm'},
        'sample': s['sample'] | {'--mode', '--seed', '--temperature'},
        'bench': s['data'] | s['model'] | s['bench'] | {'--seed', '--lr', '--batch-size',
                                                        '--dtype', '--out'},
    }[command]


def parse_args(argv):
    known = set().union(*option_sections().values()) | {'-h', '--help'}
    def is_number(a):
        try:
            return float(a) is not None
        except ValueError:
            return False
    given = [a.split('=')[0] for a in argv if a.startswith('-') and not is_number(a)]
    unknown = [a for a in given if a not in known]
    twice = [a for a in given if given.count(a) > 1]
    if unknown:
        raise UserError(f"unknown option {unknown[0]} (see: python cli.py --help)")
    if twice:
        raise UserError(f"{twice[0]} is given twice")
    if argv and argv[0] in ('train', 'sample', 'ablate', 'bench'):
        allowed = allowed_options(argv[0], given)
        wrong = [a for a in given if a not in allowed | {'-h', '--help'}]
        if wrong:
            recorded = [a for a in given if a in ('--resume', '--from')]
            raise UserError(f"{wrong[0]} is not an option of {argv[0]}"
                            f"{' with ' + recorded[0] if recorded else ''}"
                            " (see: python cli.py --help)")
    try:
        return docopt(__doc__, argv)
    except DocoptExit as e:
        first = str(e).splitlines()[0] if str(e) else ''
        if not argv or argv[0] not in ('train', 'sample', 'ablate', 'bench'):
            why = "the first argument must be a command: train, sample, ablate or bench"
        elif argv[0] == 'sample' and '--checkpoint' not in given:
            why = "sample needs --checkpoint PATH"
        elif first.startswith('--'):
            why = first  # docopt's own words, e.g. "--steps requires argument"
        else:
            why = f"these arguments fit no usage line of {argv[0]}"
        raise UserError(f"{why} (see: python cli.py --help)") from None


def parse_config(args):
    """The settings, typed and checked, from docopt's strings."""
    def number(opt, kind, low=None, high=None, low_open=False):
        try:
            x = kind(args[opt])
        except ValueError:
            raise UserError(f"{opt} must be {'an integer' if kind is int else 'a number'}, "
                            f"got {args[opt]!r}") from None
        if not math.isfinite(x) or (low is not None and (x <= low if low_open else x < low)) \
                or (high is not None and x > high):
            bound = f"> {low}" if low_open else f">= {low}"
            raise UserError(f"{opt} must be {bound}{f' and <= {high}' if high is not None else ''}, "
                            f"got {args[opt]}")
        return x

    def auto(opt):
        return None if args[opt] in ('auto', None) else number(opt, int, 1)

    mode = args['--mode']
    if mode not in ('scalar', 'tensor'):
        raise UserError(f"--mode must be scalar or tensor, got {mode!r}")
    if args['--dtype'] not in ('float32', 'float64'):
        raise UserError(f"--dtype must be float32 or float64, got {args['--dtype']!r}")
    cfg = dict(mode=mode, temperature=number('--temperature', float, 0, low_open=True),
               seed=None if args['--seed'] is None else number('--seed', int, 0))
    if args['sample']:
        if args['--batched'] and mode != 'tensor':
            raise UserError("--batched needs --mode tensor")
        return dict(cfg, checkpoint=args['--checkpoint'], num=number('--num', int, 0),
                    prompt=args['--prompt'], batched=args['--batched'])
    cfg.update(
        data=args['--data'], fetch=not args['--no-fetch'],
        val_fraction=number('--val-fraction', float, 0, 0.99),
        n_embd=number('--n-embd', int, 1), n_head=number('--n-head', int, 1),
        n_layer=number('--n-layer', int, 1), block_size=number('--block-size', int, 1),
        tie_lm_head=args['--tie-lm-head'], input_rmsnorm=not args['--no-input-rmsnorm'],
        steps=number('--steps', int, 1), lr=number('--lr', float, 0, low_open=True),
        batch_size=number('--batch-size', int, 1), dtype=args['--dtype'],
        eval_every=number('--eval-every', int, 0), val_docs=auto('--val-docs'),
        last_n=number('--last-n', int, 1), log_every=auto('--log-every'),
        samples=number('--samples', int, 0), out=None if args['--out'] == 'auto' else args['--out'],
        stop_after=auto('--stop-after'), **ADAM)
    if cfg['seed'] is None:
        cfg['seed'] = 42
    if cfg['n_embd'] % cfg['n_head']:
        raise UserError(f"--n-embd ({cfg['n_embd']}) must be divisible by --n-head ({cfg['n_head']})")
    if mode == 'scalar':
        cfg['batch_size'], cfg['dtype'] = 1, 'float64'  # one document a step, Python floats
    if args['ablate']:
        cfg.update(seeds=number('--seeds', int, 1), jobs=auto('--jobs'))
    if args['bench']:
        cfg.update(bench_steps=number('--bench-steps', int, 1), warmup=number('--warmup', int, 0),
                   repeats=number('--repeats', int, 1), threads=number('--threads', int, 1),
                   scalar=not args['--no-scalar'], torch=args['--torch'],
                   dtype=args['--dtype'], batch_size=number('--batch-size', int, 1))
    return cfg


# ---------------------------------------------------------------------------
# The two implementations of the model, behind the same names.
def model_lib(mode):
    """The module that implements a mode: microgpt (scalar) or tensorgpt (tensor)."""
    if mode == 'scalar':
        import microgpt
        return microgpt
    try:
        import tensorgpt
    except ImportError as e:
        if e.name == 'tensorgpt':
            raise UserError("--mode tensor is not available yet (tensorgpt.py is missing)") from None
        raise UserError(f"--mode tensor needs {e.name}: install the project with pip") from None
    return tensorgpt


def build_model(cfg, vocab_size, rng):
    model_cfg = {k: cfg[k] for k in MODEL_KEYS if k != 'vocab_size'}
    if cfg['mode'] == 'tensor':
        model_cfg['dtype'] = cfg['dtype']
    return model_lib(cfg['mode']).GPT(vocab_size, rng, **model_cfg)


def train_kwargs(cfg):
    return dict(batch_size=cfg['batch_size']) if cfg['mode'] == 'tensor' else {}


def flat(arrays):
    """One float64 vector from a list of floats (scalar mode) or of arrays (tensor mode)."""
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays]) \
        if len(arrays) else np.zeros(0)


def fill(dst, values):
    """Write a flat vector back into a list of floats or of arrays, in place."""
    i = 0
    for j, d in enumerate(dst):
        if np.ndim(d) == 0:
            dst[j], i = float(values[i]), i + 1
        else:
            d[...] = values[i:i + d.size].reshape(d.shape)
            i += d.size


# ---------------------------------------------------------------------------
# Files: every one written whole or not at all (a temporary file, then a rename).
def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'w', encoding='utf-8', newline='') as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """Strict JSON: a NaN or infinite loss (a diverged run) is written as null."""
    def strict(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: strict(v) for k, v in x.items()}
        return [strict(v) for v in x] if isinstance(x, (list, tuple)) else x
    write_atomic(path, json.dumps(strict(obj), indent=2, allow_nan=False) + '\n')


def read_json(path, what):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found: is {os.path.dirname(path) or '.'} {what}?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e})") from None


def write_csv(path, header, rows):
    text = io.StringIO()
    w = csv.writer(text, lineterminator='\n')
    w.writerow(header)
    w.writerows(rows)
    write_atomic(path, text.getvalue())


# Checkpoint: JSON with the config, the vocabulary, and every weight by its reference name as
# little-endian float64 bytes in base64, exact on reload and free of pickle; also Adam's
# moments (same names and shapes), the step, and the random generator's state, to resume.
def encode_array(a):
    a = np.asarray(a, dtype='<f8')
    return dict(shape=list(a.shape), float64=base64.b64encode(a.tobytes()).decode())


def decode_array(d):
    a = np.frombuffer(base64.b64decode(d['float64'], validate=True), dtype='<f8')
    return a.reshape(d['shape']).astype(np.float64)


def save_checkpoint(path, model, chars, step, rng, adam):
    weights = model.weights()
    shapes = [np.shape(w) for w in weights.values()]
    moments = {}
    for key, values in (('m', flat(adam.m)), ('v', flat(adam.v))):
        parts = np.split(values, np.cumsum([math.prod(s) for s in shapes])[:-1])
        moments[key] = {n: encode_array(p.reshape(s)) for n, p, s in zip(weights, parts, shapes)}
    ckpt = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                config={k: model.config[k] for k in MODEL_KEYS}, vocab=''.join(chars), step=step,
                rng_state=rng.getstate(), weights={n: encode_array(w) for n, w in weights.items()},
                adam=dict(t=adam.t, **moments))
    write_atomic(path, json.dumps(ckpt) + '\n')


def load_checkpoint(path):
    """(config, chars, weights as float64 arrays, checkpoint dict), or a UserError that
    says what is wrong with the file."""
    def bad(why):
        return UserError(f"{path} is not a valid checkpoint: {why}")
    try:
        with open(path, encoding='utf-8') as f:
            ckpt = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory; pass its checkpoint.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"not readable JSON ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise bad("it does not say it is one")
    if ckpt.get('version') != CHECKPOINT_VERSION:
        raise bad(f"version {ckpt.get('version')!r}; this program reads {CHECKPOINT_VERSION}")
    config, chars = ckpt.get('config'), ckpt.get('vocab')
    if not isinstance(config, dict) or any(k not in config for k in MODEL_KEYS):
        raise bad(f"its config lacks one of {', '.join(MODEL_KEYS)}")
    for k in MODEL_KEYS:
        want = bool if k in ('tie_lm_head', 'input_rmsnorm') else int
        if type(config[k]) is not want or (want is int and config[k] < 1):
            raise bad(f"config {k} = {config[k]!r}")
    if config['n_embd'] % config['n_head']:
        raise bad("n_embd is not divisible by n_head")
    if not isinstance(chars, str) or len(set(chars)) != len(chars) \
            or len(chars) + 1 != config['vocab_size']:
        raise bad("its vocabulary does not match vocab_size")
    expected = expected_shapes(config)

    def arrays(group, what):
        if not isinstance(group, dict) or set(group) != set(expected):
            raise bad(f"the {what} names should be exactly {', '.join(expected)}")
        out = {}
        for name, shape in expected.items():
            try:
                out[name] = decode_array(group[name])
            except (TypeError, KeyError, ValueError) as e:
                raise bad(f"{what} {name} is malformed ({e})") from None
            if out[name].shape != shape:
                raise bad(f"{what} {name} has shape {list(out[name].shape)}, "
                          f"the config says {list(shape)}")
        return out
    weights = arrays(ckpt.get('weights'), 'weight')
    adam = ckpt.get('adam')
    if adam is not None:
        if not isinstance(adam, dict) or not isinstance(adam.get('t'), int):
            raise bad("its Adam state is malformed")
        ckpt['adam'] = dict(t=adam['t'], m=arrays(adam.get('m'), 'Adam m'),
                            v=arrays(adam.get('v'), 'Adam v'))
    return config, chars, weights, ckpt


def expected_shapes(c):
    n, v = c['n_embd'], c['vocab_size']
    shapes = {'wte': (v, n), 'wpe': (c['block_size'], n)}
    if not c['tie_lm_head']:
        shapes['lm_head'] = (v, n)
    for i in range(c['n_layer']):
        for m in ('attn_wq', 'attn_wk', 'attn_wv', 'attn_wo'):
            shapes[f'layer{i}.{m}'] = (n, n)
        shapes[f'layer{i}.mlp_fc1'], shapes[f'layer{i}.mlp_fc2'] = (4 * n, n), (n, 4 * n)
    return shapes


def restore_rng(state):
    version, internal, gauss_next = state
    rng = random.Random()
    rng.setstate((version, tuple(internal), gauss_next))
    return rng


# ---------------------------------------------------------------------------
# Run records: where a run came from (commit, machine, versions), so it can be reproduced.
def git_commit():
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 'unknown', None
    if out.returncode:
        return 'unknown', None
    return out.stdout.strip(), bool(dirty.stdout.strip())


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def version_of(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return 'not installed'


def blas():
    try:
        info = np.show_config(mode='dicts')['Build Dependencies']['blas']
        return f"{info.get('name')} {info.get('version')}"
    except Exception:  # older NumPy has no dict mode; this is a record, never an error
        return 'unknown'


def environment(cfg, start):
    commit, dirty = git_commit()
    return dict(seed=cfg['seed'], mode=cfg['mode'],
                backend='python floats' if cfg['mode'] == 'scalar'
                else f"numpy+numba {cfg['dtype']}",
                commit=commit, commit_dirty=dirty, python=platform.python_version(),
                numpy=np.__version__, numba=version_of('numba'), blas=blas(), cpu=cpu_model(),
                cores=os.cpu_count(), start_time=start.isoformat(timespec='seconds'),
                argv=sys.argv[1:])


def new_dir(out, default, start, label):
    """Create the folder for a new record: `out`, or a fresh one under results/default."""
    if out is None:
        out = base = os.path.join(ROOT, 'results', default, f"{start:%Y%m%d-%H%M%S}-{label}")
        i = 1
        while os.path.exists(out):
            i += 1
            out = f"{base}-{i}"
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    if os.path.isdir(out) and os.listdir(out):
        raise UserError(f"{out} is not empty; choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror}") from None
    return out


@contextlib.contextmanager
def removed_if_empty(folder):
    """Around the work that fills a new record's folder: if it fails before writing
    anything, the folder goes too."""
    try:
        yield
    except BaseException:
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
        raise


def sample_shares(samples, train_docs, val_docs):
    """How many samples are training documents, held-out validation documents, or new."""
    train, val = set(train_docs), set(val_docs)
    n = len(samples) or 1
    return dict(train=sum(s in train for s in samples) / n,
                val=sum(s in val and s not in train for s in samples) / n,
                new=sum(s not in train and s not in val for s in samples) / n)


# ---------------------------------------------------------------------------
# train: one run, start to finish (or resumed), and its record.
def format_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def ctrl_c_flag(second_raises=True):
    """Within, Ctrl-C appends to the yielded list instead of raising, so that work can stop
    where it is consistent (after a training step); a second Ctrl-C raises at once."""
    flag = []

    def on_sigint(signum, frame):
        if flag and second_raises:
            raise KeyboardInterrupt
        flag.append(True)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def run_training(cfg, out, resume=None, should_stop=lambda: False):
    """Train as cfg says, print progress, write the run record to out; return the metrics.
    `resume` is (weights, checkpoint, earlier losses, earlier validation history); once
    should_stop() is true (Ctrl-C, see ctrl_c_flag), training ends after the step under way."""
    start = datetime.now(timezone.utc)
    docs = data.load_docs(cfg['data'], cfg['fetch'])
    tok = data.Tokenizer.from_docs(docs)
    rng = random.Random(cfg['seed'])  # the run's one generator: shuffle, weights, samples
    train_docs, val_docs = data.split_docs(docs, rng, cfg['val_fraction'])
    lib = model_lib(cfg['mode'])
    model = build_model(cfg, tok.vocab_size, rng)
    adam = lib.Adam(model.params, **ADAM)
    losses, val_history, start_step = [], [], 0
    if resume:
        weights, ckpt, losses, val_history = resume
        model.load_weights(weights)
        fill(adam.m, flat([ckpt['adam']['m'][name] for name in weights]))
        fill(adam.v, flat([ckpt['adam']['v'][name] for name in weights]))
        adam.t, start_step, rng = ckpt['adam']['t'], ckpt['step'], restore_rng(ckpt['rng_state'])
    n_params = sum(np.size(w) for w in model.weights().values())
    bs, steps = cfg['block_size'], cfg['steps']
    train_tokens = [tok.frame(d, bs) for d in train_docs]
    n_val = len(val_docs) if cfg['val_docs'] is None and cfg['mode'] == 'tensor' else \
        min(len(val_docs), cfg['val_docs'] or 200)
    val_tokens = [tok.frame(d, bs) for d in val_docs[:n_val]]
    log_every = cfg['log_every'] or (1 if cfg['mode'] == 'scalar' else max(1, steps // 100))
    stop = min(steps, cfg.get('stop_after') or steps)
    cfg = dict(cfg, data_sha256=data.sha256_of(cfg['data']), out=out)
    print(f"num docs: {len(docs)} ({len(train_docs)} train, {len(val_docs)} validation)")
    print(f"vocab size: {tok.vocab_size}\nnum params: {n_params}")
    print(f"mode: {cfg['mode']}{' ' + cfg['dtype'] if cfg['mode'] == 'tensor' else ''}, "
          f"seed {cfg['seed']}, run record: {os.path.relpath(out)}"
          f"{f', resuming after step {start_step}' if resume else ''}")

    def evaluate():
        return lib.evaluate(model, val_tokens) if val_tokens else None

    status, n_tokens, train_time, t0 = 'completed', 0, 0.0, time.perf_counter()
    try:
        with np.errstate(all='ignore'):  # a diverging run is caught below, by its loss
            for step, loss, n in lib.train(model, train_tokens, steps, lr=cfg['lr'], adam=adam,
                                           start_step=start_step, **train_kwargs(cfg)):
                losses.append(loss)
                n_tokens += n
                if not math.isfinite(loss):
                    status = 'diverged'
                    print(f"step {step:4d} / {steps:4d} | loss {loss:.4f}")
                    break
                if step % log_every == 0 or step in (1, stop):
                    train_time += time.perf_counter() - t0
                    rate = (step - start_step) / train_time
                    print(f"step {step:4d} / {steps:4d} | loss {loss:.4f} | {rate:.1f} steps/s"
                          f" | {n_tokens / train_time:.0f} tok/s"
                          f" | eta {format_time((stop - step) / rate)}", flush=True)
                    t0 = time.perf_counter()
                if cfg['eval_every'] and step % cfg['eval_every'] == 0 and step < steps:
                    train_time += time.perf_counter() - t0
                    val_history.append((step, evaluate()))
                    print(f"step {step:4d} / {steps:4d} | val loss {val_history[-1][1]:.4f}")
                    t0 = time.perf_counter()
                if step == stop < steps:
                    status = 'stopped'
                    break
                if should_stop():
                    status = 'interrupted'
                    print(f"\ninterrupted after step {step}: writing the run record")
                    break
    except (ArithmeticError, ValueError) as e:  # scalar mode: math.exp overflow, log(0)
        status = 'diverged'
        losses.append(math.nan)
        print(f"step {len(losses):4d} / {steps:4d} | loss nan ({e})")
    train_time += time.perf_counter() - t0
    steps_done, session_steps = len(losses), len(losses) - start_step

    val_loss = evaluate() if status == 'completed' else None
    if val_loss is not None:
        val_history.append((steps_done, val_loss))
    last_n = min(cfg['last_n'], steps_done)
    metrics = dict(
        status=status, steps=steps_done, final_loss=losses[-1] if losses else None,
        mean_loss_last_n=sum(losses[-last_n:]) / last_n if last_n else None, last_n=last_n,
        val_loss=val_loss, val_docs=len(val_tokens), val_history=val_history,
        steps_per_s=session_steps / train_time if session_steps else None,
        tokens_per_s=n_tokens / train_time if session_steps else None, tokens=n_tokens,
        train_time_s=train_time, num_params=n_params, environment=environment(cfg, start))
    print(f"--- summary: {status} after {steps_done} steps ---")
    if session_steps:
        print(f"final loss {metrics['final_loss']:.4f} | mean of the last {last_n} steps "
              f"{metrics['mean_loss_last_n']:.4f} | validation loss "
              f"{'n/a' if val_loss is None else f'{val_loss:.4f}'} ({len(val_tokens)} docs)")
        print(f"{metrics['steps_per_s']:.1f} steps/s | {metrics['tokens_per_s']:.0f} tokens/s | "
              f"{format_time(train_time)} training")

    samples = []
    if status != 'diverged':
        save_checkpoint(os.path.join(out, 'checkpoint.json'), model, tok.chars, steps_done, rng,
                        adam)
    if status == 'completed':
        if cfg['samples']:
            print(f"--- samples (temperature {cfg['temperature']}) ---")
        for i in range(cfg['samples']):
            if should_stop():
                break  # Ctrl-C after training: keep the record, skip the remaining samples
            samples.append(tok.decode(model.sample(rng, tok.bos, cfg['temperature'])))
            print(f"sample {i + 1:2d}: {samples[-1]}")
        if samples:
            metrics['samples'] = sample_shares(samples, train_docs, val_docs)
            print("samples: {train:.0%} training documents, {val:.0%} held-out validation "
                  "documents, {new:.0%} new".format(**metrics['samples']))
    write_json(os.path.join(out, 'config.json'), dict(command='train', **cfg))
    write_csv(os.path.join(out, 'losses.csv'), ['step', 'loss'],
              ((i + 1, repr(loss)) for i, loss in enumerate(losses)))
    write_atomic(os.path.join(out, 'samples.txt'), ''.join(s + '\n' for s in samples))
    write_json(os.path.join(out, 'metrics.json'), metrics)  # last: its presence marks a record
    print(f"run record: {os.path.relpath(out)}")
    if status in ('stopped', 'interrupted'):
        print(f"to continue: python cli.py train --resume {os.path.relpath(out)}")
    return metrics


def cmd_train(cfg, args):
    start = datetime.now(timezone.utc)
    resume = None
    if args['--from'] or args['--resume']:
        src = args['--from'] or args['--resume']
        recorded = read_json(os.path.join(src, 'config.json'), 'a run record')
        cfg = {k: recorded[k] for k in recorded if k not in ('command', 'out', 'data_sha256')}
        cfg['out'] = None if args['--out'] == 'auto' else args['--out']
        if not os.path.exists(cfg['data']) or data.sha256_of(cfg['data']) != recorded['data_sha256']:
            raise UserError(f"{cfg['data']} is missing or has changed since the run in {src} "
                            f"(sha256 {recorded['data_sha256'][:12]}...)")
        if args['--resume']:
            metrics = read_json(os.path.join(src, 'metrics.json'), 'a run record')
            if metrics['status'] not in ('stopped', 'interrupted'):
                raise UserError(f"the run in {src} is {metrics['status']}: only a stopped or "
                                "interrupted run can be resumed")
            _, _, weights, ckpt = load_checkpoint(os.path.join(src, 'checkpoint.json'))
            with open(os.path.join(src, 'losses.csv'), encoding='utf-8') as f:
                losses = [float(row['loss']) for row in csv.DictReader(f)]
            resume = (weights, ckpt, losses[:ckpt['step']], metrics['val_history'])
            cfg['stop_after'] = None
        cfg['resumed_from' if args['--resume'] else 'rerun_of'] = os.path.abspath(src)
    data.load_docs(cfg['data'], cfg['fetch'])  # a data problem shows before any folder is made
    out = new_dir(cfg['out'], 'runs', start, f"{cfg['mode']}-seed{cfg['seed']}")
    with removed_if_empty(out), ctrl_c_flag() as ctrl_c:
        metrics = run_training(cfg, out, resume, lambda: bool(ctrl_c))
    if metrics['status'] == 'diverged':
        print(f"error: training diverged at step {metrics['steps']}; try a lower --lr. "
              f"The record up to that step is in {os.path.relpath(out)}", file=sys.stderr)
        return 2
    return 130 if metrics['status'] == 'interrupted' else 0


# ---------------------------------------------------------------------------
# sample
def cmd_sample(cfg, args):
    config, chars, weights, ckpt = load_checkpoint(cfg['checkpoint'])
    tok = data.Tokenizer(chars)
    try:
        prompt = tok.encode(cfg['prompt'])
    except data.DataError as e:
        raise UserError(f"--prompt: {e} of this checkpoint") from None
    if len(prompt) >= config['block_size']:
        raise UserError(f"--prompt is {len(prompt)} characters; the model's context holds "
                        f"{config['block_size']} tokens, so at most {config['block_size'] - 1}")
    if cfg['seed'] is not None:
        rng = random.Random(cfg['seed'])
    else:
        rng = restore_rng(ckpt['rng_state'])
    model = build_model(dict(config, mode=cfg['mode'], dtype='float64'), config['vocab_size'],
                        random.Random(0))
    model.load_weights(weights)
    if cfg['batched']:
        samples = model.sample_batch(rng, tok.bos, cfg['num'], cfg['temperature'], prompt)
    else:
        samples = (model.sample(rng, tok.bos, cfg['temperature'], prompt) for _ in range(cfg['num']))
    for i, ids in enumerate(samples):
        print(f"sample {i + 1:2d}: {cfg['prompt']}{tok.decode(ids)}")


# ---------------------------------------------------------------------------
# ablate: the four variants over K seeds, each a normal run record, then the summary.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # Student's t, 97.5% quantile, df 1..30


THREAD_VARS = ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMBA_NUM_THREADS')


def ablation_run(cfg, out, stop_file):
    """One run of an ablation, in a worker process: its output goes to out/train.log.
    Once stop_file exists (the ablation is interrupted) it stops after its step, or returns
    None without a run."""
    if os.path.exists(stop_file):
        return None
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'train.log'), 'w', encoding='utf-8') as log, \
            contextlib.redirect_stdout(log), ctrl_c_flag() as ctrl_c:
        metrics = run_training(cfg, out,
                               should_stop=lambda: bool(ctrl_c) or os.path.exists(stop_file))
    if metrics['status'] == 'interrupted':
        write_atomic(stop_file, '')  # Ctrl-C reached this worker: the queued runs skip
    return metrics


def worker_init(parent):
    # An idle worker ignores Ctrl-C; a training one stops after its step (run_training).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def exit_with_parent():  # a worker whose ablation was killed must not run on alone
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)
    threading.Thread(target=exit_with_parent, daemon=True).start()


def cmd_ablate(cfg, args):
    start = datetime.now(timezone.utc)
    if args['--resume']:
        out = args['--resume']
        plan = read_json(os.path.join(out, 'ablation.json'), 'an ablation')
        base, seeds = plan['config'], plan['seeds']
        base['jobs'] = cfg['jobs'] if args['--jobs'] not in ('auto', None) else base['jobs']
    else:
        base, seeds = cfg, [cfg['seed'] + i for i in range(cfg['seeds'])]
        data.load_docs(cfg['data'], cfg['fetch'])  # a data problem shows now, not in a worker
        out = new_dir(cfg['out'], 'ablations', start, cfg['mode'])
        write_json(os.path.join(out, 'ablation.json'),
                   dict(config=dict(cfg, data=os.path.abspath(cfg['data'])), seeds=seeds,
                        variants={k: dict(tie_lm_head=t, input_rmsnorm=n)
                                  for k, (t, n) in VARIANTS.items()}))
        base = read_json(os.path.join(out, 'ablation.json'), 'an ablation')['config']
    jobs = base['jobs'] or os.cpu_count() or 1
    runs, todo = [], []
    for seed in seeds:
        for variant, (tie, norm) in VARIANTS.items():
            run_dir = os.path.join(out, 'runs', f"{variant}-seed{seed}")
            runs.append((variant, seed, run_dir))
            try:
                done = read_json(os.path.join(run_dir, 'metrics.json'), '')['status'] == 'completed'
            except UserError:
                done = False
            if not done:
                shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over
                todo.append((dict(base, seed=seed, tie_lm_head=tie, input_rmsnorm=norm, out=run_dir,
                                  stop_after=None), variant, seed, run_dir))
    print(f"ablation: {len(VARIANTS)} variants x {len(seeds)} seeds, {base['steps']} steps, "
          f"{base['mode']} mode; {len(runs) - len(todo)} runs done, {len(todo)} to go, "
          f"{min(jobs, max(1, len(todo)))} at a time; record: {os.path.relpath(out)}")

    stop_file = os.path.join(out, '.interrupted')
    if os.path.exists(stop_file):
        os.remove(stop_file)

    def report(i, variant, seed, m):
        if m is None:
            return
        val = 'n/a' if m['val_loss'] is None else f"{m['val_loss']:.4f}"
        print(f"[{i:2d}/{len(todo)}] {variant:13s} seed {seed}: {m['status']}, final loss "
              f"{m['final_loss']:.4f}, val loss {val}, {m['tokens_per_s']:.0f} tok/s", flush=True)

    try:
        if jobs == 1:
            for i, (run_cfg, variant, seed, run_dir) in enumerate(todo, 1):
                metrics = ablation_run(run_cfg, run_dir, stop_file)
                report(i, variant, seed, metrics)
                if metrics['status'] == 'interrupted':
                    raise KeyboardInterrupt
        else:
            # Share the cores out: each worker's BLAS and numba get cores // jobs threads
            # (more would fight over the cores, several times slower). Results do not change:
            # no kernel, BLAS's included, splits a sum across threads.
            threads = str(max(1, (os.cpu_count() or 1) // jobs))
            saved = {var: os.environ.get(var) for var in THREAD_VARS}
            os.environ.update(dict.fromkeys(THREAD_VARS, threads))  # read by the new workers
            # Ctrl-C only sets a flag here: the pool's own machinery must not be interrupted.
            try:
                with ctrl_c_flag(second_raises=False) as stop, concurrent.futures.ProcessPoolExecutor(
                        jobs, mp_context=multiprocessing.get_context('spawn'),
                        initializer=worker_init, initargs=(os.getpid(),)) as pool:
                    pending = {pool.submit(ablation_run, c, d, stop_file): (v, s)
                               for c, v, s, d in todo}
                    i = 0
                    while pending:
                        done, _ = concurrent.futures.wait(
                            pending, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED)
                        for f in done:
                            variant, seed = pending.pop(f)
                            if not f.cancelled():
                                i += 1
                                report(i, variant, seed, f.result())
                        if stop and not os.path.exists(stop_file):
                            # Running runs stop after their step, queued ones skip.
                            write_atomic(stop_file, '')
                            for f in pending:
                                f.cancel()
            finally:
                for var, value in saved.items():
                    os.environ.pop(var) if value is None else os.environ.update({var: value})
            if stop:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished runs are kept; to go on: "
              f"python cli.py ablate --resume {os.path.relpath(out)}", file=sys.stderr)
        return 130
    summarize_ablation(out, runs, seeds)
    return 0


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def summarize_ablation(out, runs, seeds):
    rows = []
    for variant, seed, run_dir in runs:
        m = read_json(os.path.join(run_dir, 'metrics.json'), 'a run record')
        s = m.get('samples') or {}
        rows.append(dict(variant=variant, seed=seed, tie_lm_head=VARIANTS[variant][0],
                         input_rmsnorm=VARIANTS[variant][1], status=m['status'],
                         final_loss=m['final_loss'], mean_loss_last_n=m['mean_loss_last_n'],
                         last_n=m['last_n'], val_loss=m['val_loss'],
                         steps_per_s=m['steps_per_s'], tokens_per_s=m['tokens_per_s'],
                         samples_train=s.get('train'), samples_val=s.get('val'),
                         samples_new=s.get('new'), run=os.path.relpath(run_dir, out)))
    write_csv(os.path.join(out, 'summary.csv'), list(rows[0]), (r.values() for r in rows))
    reference = next(iter(VARIANTS))
    ref_val = {r['seed']: r['val_loss'] for r in rows if r['variant'] == reference}
    table = []
    for variant in VARIANTS:
        rs = [r for r in rows if r['variant'] == variant]
        stats = {k: mean_sd([r[k] for r in rs]) for k in (
            'final_loss', 'mean_loss_last_n', 'val_loss', 'steps_per_s', 'tokens_per_s',
            'samples_train', 'samples_val', 'samples_new')}
        diffs = [r['val_loss'] - ref_val[r['seed']] for r in rs
                 if r['val_loss'] is not None and ref_val.get(r['seed']) is not None]
        delta = None
        if len(diffs) >= 2 and variant != reference:
            mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
            t = T_975[len(diffs) - 2] if len(diffs) - 1 <= len(T_975) else 1.96
            half = t * sd / math.sqrt(len(diffs))
            delta = dict(mean=mean, low=mean - half, high=mean + half, n=len(diffs))
        table.append(dict(variant=variant, seeds=len(rs), **stats, val_delta=delta))
    write_json(os.path.join(out, 'summary.json'), dict(seeds=seeds, reference=reference,
                                                       variants=table, runs=rows))
    md = ablation_table(table, rows[0]['last_n'], reference)
    write_atomic(os.path.join(out, 'table.md'), md)
    print(md)
    plot_ablation(out, runs)
    print(f"summary: {os.path.relpath(out)}/summary.json, summary.csv, table.md")


def ablation_table(table, last_n, reference):
    def pm(stat, fmt='.4f'):
        mean, sd = stat
        if mean is None:
            return 'n/a'
        return f"{mean:{fmt}}" + ('' if sd is None else f" ± {sd:{fmt}}")

    lines = [f"| variant | lm_head | input rmsnorm | final loss | mean loss, last {last_n} | "
             f"val loss | Δ val vs {reference} (95% CI) | steps/s | tokens/s | "
             "samples: train / val / new |",
             '|' + ' --- |' * 10]
    for r in table:
        tie, norm = VARIANTS[r['variant']]
        d = r['val_delta']
        delta = '(reference)' if r['variant'] == reference else 'n/a (needs ≥ 2 seeds)' \
            if d is None else f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        shares = ' / '.join('n/a' if r[k][0] is None else f"{r[k][0]:.0%}"
                            for k in ('samples_train', 'samples_val', 'samples_new'))
        lines.append(f"| {r['variant']} | {'tied' if tie else 'untied'} | {'on' if norm else 'off'}"
                     f" | {pm(r['final_loss'])} | {pm(r['mean_loss_last_n'])} | {pm(r['val_loss'])}"
                     f" | {delta} | {pm(r['steps_per_s'], '.1f')} | {pm(r['tokens_per_s'], '.0f')}"
                     f" | {shares} |")
    return '\n'.join(lines) + f"\n\nMean ± standard deviation over {table[0]['seeds']} seed(s).\n"


def plot_ablation(out, runs):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed; pip install -e '.[plot]' to get "
              "losses.png")
        return
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
    for variant in VARIANTS:
        curves, vals = [], {}
        for v, _, run_dir in runs:
            if v != variant:
                continue
            with open(os.path.join(run_dir, 'losses.csv'), encoding='utf-8') as f:
                curves.append([float(r['loss']) for r in csv.DictReader(f)])
            for step, val in read_json(os.path.join(run_dir, 'metrics.json'), '')['val_history']:
                vals.setdefault(step, []).append(val)
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)
        w = max(1, n // 50)  # moving average over 2% of the run
        smooth = np.convolve(mean, np.ones(w) / w, mode='valid')
        ax_train.plot(np.arange(w, n + 1), smooth, label=variant)
        steps = sorted(vals)
        ax_val.plot(steps, [np.mean(vals[s]) for s in steps], marker='o', label=variant)
    ax_train.set(title='training loss (moving average, mean over seeds)', xlabel='step',
                 ylabel='loss')
    ax_val.set(title='validation loss (mean over seeds)', xlabel='step', ylabel='loss')
    for ax in (ax_train, ax_val):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = os.path.join(out, '.losses.tmp.png')
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, os.path.join(out, 'losses.png'))
    print(f"plot: {os.path.relpath(out)}/losses.png")


# ---------------------------------------------------------------------------
# bench: the same data, seed, settings and steps for every contender, timed side by side.
def time_ours(cfg, mode, batch_size, train_tokens, vocab_size, steps, warmup):
    """One fresh run of warmup + steps steps; (steps/s, tokens/s) over the last `steps`."""
    run_cfg = dict(cfg, mode=mode, batch_size=batch_size,
                   dtype=cfg['dtype'] if mode == 'tensor' else 'float64')
    lib = model_lib(mode)
    model = build_model(run_cfg, vocab_size, random.Random(cfg['seed']))
    tokens, t0 = 0, time.perf_counter()
    for step, _, n in lib.train(model, train_tokens, warmup + steps, lr=cfg['lr'],
                                **train_kwargs(run_cfg)):
        if step == warmup:
            tokens, t0 = 0, time.perf_counter()
        tokens += n
    dt = time.perf_counter() - t0
    return steps / dt, tokens / dt


def time_torch(cfg, batch_size, steps, warmup):
    script = os.path.join(ROOT, '..', 'shared', 'bench', 'torch_ref.py')
    cmd = [cfg['torch'], script, '--data', cfg['data'], '--batch-size', str(batch_size),
           '--steps', str(warmup + steps), '--warmup', str(warmup), '--threads', str(cfg['threads']),
           '--dtype', cfg['dtype'], '--n-embd', str(cfg['n_embd']), '--n-head', str(cfg['n_head']),
           '--n-layer', str(cfg['n_layer']), '--block-size', str(cfg['block_size']),
           '--lr', str(cfg['lr']), '--seed', str(cfg['seed'])]
    cmd += ['--tie'] * cfg['tie_lm_head'] + ['--no-input-rmsnorm'] * (not cfg['input_rmsnorm'])
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise UserError(f"torch_ref.py failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    result = json.loads(p.stdout.strip().splitlines()[-1])
    return result['steps_per_s'], result['tokens_per_s']


def cmd_bench(cfg, args):
    start = datetime.now(timezone.utc)
    if cfg['torch'] and not os.path.exists(os.path.join(ROOT, '..', 'shared', 'bench',
                                                        'torch_ref.py')):
        raise UserError("--torch needs ../shared/bench/torch_ref.py beside the project")
    if cfg['torch'] and not shutil.which(cfg['torch']):
        raise UserError(f"--torch {cfg['torch']}: no such program")
    docs = data.load_docs(cfg['data'], cfg['fetch'])
    tok = data.Tokenizer.from_docs(docs)
    train_docs, _ = data.split_docs(docs, random.Random(cfg['seed']), cfg['val_fraction'])
    train_tokens = [tok.frame(d, cfg['block_size']) for d in train_docs]
    B = cfg['batch_size']
    contenders = ([('scalar', 1)] if cfg['scalar'] else []) + [('tensor', 1), ('tensor', B)]
    if cfg['torch']:
        contenders += [('torch', 1), ('torch', B)]
    contenders = list(dict.fromkeys(contenders))
    out = new_dir(cfg['out'], 'bench', start, 'bench')
    with removed_if_empty(out):
        return run_bench(cfg, out, start, train_tokens, tok.vocab_size, contenders)


def run_bench(cfg, out, start, train_tokens, vocab_size, contenders):
    steps, warmup, B = cfg['bench_steps'], cfg['warmup'], cfg['batch_size']
    print(f"bench: {steps} timed steps after {warmup} untimed, {cfg['repeats']} repeats, "
          f"{cfg['threads']} threads, {cfg['dtype']} (tensor, torch); n_embd {cfg['n_embd']}, "
          f"n_head {cfg['n_head']}, n_layer {cfg['n_layer']}, block_size {cfg['block_size']}")
    # Warm-up: compile (or load from numba's cache) every kernel before any timing.
    t0 = time.perf_counter()
    time_ours(cfg, 'tensor', 1, train_tokens, vocab_size, 1, 1)
    time_ours(cfg, 'tensor', B, train_tokens, vocab_size, 1, 1)
    compile_s = time.perf_counter() - t0
    print(f"warm-up (numba compile or cache load): {compile_s:.1f} s")
    import numba
    numba.set_num_threads(min(cfg['threads'], numba.config.NUMBA_NUM_THREADS))
    timings = {c: [] for c in contenders}
    for r in range(cfg['repeats']):
        for mode, b in contenders:  # alternating, so that drift on the machine hits all alike
            t = time_torch(cfg, b, steps, warmup) if mode == 'torch' else \
                time_ours(cfg, mode, b, train_tokens, vocab_size, steps, warmup)
            timings[(mode, b)].append(t)
            print(f"repeat {r + 1}: {mode:6s} batch {b:3d}: {t[0]:9.1f} steps/s "
                  f"{t[1]:11.0f} tokens/s", flush=True)
    results = []
    for (mode, b), ts in timings.items():
        sps, tps = [t[0] for t in ts], [t[1] for t in ts]
        results.append(dict(mode=mode, batch_size=b, steps_per_s=statistics.median(sps),
                            steps_per_s_range=[min(sps), max(sps)],
                            tokens_per_s=statistics.median(tps),
                            tokens_per_s_range=[min(tps), max(tps)]))
    by = {(r['mode'], r['batch_size']): r for r in results}
    ratios = {}
    if ('scalar', 1) in by:
        for b in dict.fromkeys((1, B)):
            ratios[f"tensor batch {b} / scalar, tokens/s"] = \
                by[('tensor', b)]['tokens_per_s'] / by[('scalar', 1)]['tokens_per_s']
    if cfg['torch']:
        for b in dict.fromkeys((1, B)):
            ratios[f"tensor / torch at batch {b}, tokens/s"] = \
                by[('tensor', b)]['tokens_per_s'] / by[('torch', b)]['tokens_per_s']
    env = environment(dict(cfg, mode='bench'), start)
    env.update(threads=cfg['threads'], torch=cfg['torch'] and subprocess.run(
        [cfg['torch'], '-c', 'import torch; print(torch.__version__)'], capture_output=True,
        text=True).stdout.strip(), openblas_coretype=os.environ.get('OPENBLAS_CORETYPE'))
    md = ['| mode | batch | steps/s (median) | range | tokens/s (median) | range |',
          '| --- | --- | --- | --- | --- | --- |']
    for r in results:
        md.append(f"| {r['mode']} | {r['batch_size']} | {r['steps_per_s']:.1f} | "
                  f"{r['steps_per_s_range'][0]:.1f}–{r['steps_per_s_range'][1]:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {r['tokens_per_s_range'][0]:.0f}–"
                  f"{r['tokens_per_s_range'][1]:.0f} |")
    md += [''] + [f"- {k}: **{v:.1f}×**" for k, v in ratios.items()]
    md += [f"- numba warm-up (compile or cache load), not timed: {compile_s:.1f} s", '']
    write_json(os.path.join(out, 'bench.json'), dict(
        config={k: cfg[k] for k in ('data', 'seed', 'lr', 'n_embd', 'n_head', 'n_layer',
                                    'block_size', 'dtype', 'batch_size', 'bench_steps', 'warmup',
                                    'repeats', 'threads')},
        data_sha256=data.sha256_of(cfg['data']), results=results, ratios=ratios,
        compile_s=compile_s, environment=env))
    write_atomic(os.path.join(out, 'bench.md'), '\n'.join(md))
    print('\n'.join(md))
    print(f"results: {os.path.relpath(out)}/bench.json, bench.md")
    return 0


# ---------------------------------------------------------------------------
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        cfg = parse_config(args)
        command = next(c for c in ('train', 'sample', 'ablate', 'bench') if args[c])
        return globals()[f"cmd_{command}"](cfg, args) or 0
    except (UserError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
