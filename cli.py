"""microgpt-lab: train and sample a GPT written from scratch, in scalar or tensor mode.

Usage:
  cli.py train [--mode MODE] [--seed S] [--temperature T] [options]
  cli.py sample --checkpoint PATH [--mode MODE] [--seed S] [--temperature T] [--num N] [--prompt TEXT]
  cli.py -h | --help

Commands:
  train   Train a model: print a line per step (loss, steps/s, time left), a summary and
          samples, and write a run record to --out: config.json, metrics.json,
          losses.csv, samples.txt and checkpoint.json.
  sample  Print samples from a checkpoint written by train (in either mode).

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
  --mode MODE         scalar (microgpt.py, pure Python) or tensor (tensorgpt.py, NumPy and
                      numba) [default: scalar]
  --seed S            Seed of the one random generator that shuffles the documents, draws
                      the weights and then the samples. train: 42. sample: none given
                      continues the training run's generator, so its first samples are
                      the ones train printed.
  --steps N           Training steps [default: 1000]
  --lr LR             Adam learning rate, decayed linearly to 0 over the run [default: 0.01]
  --batch-size B      Documents per step in tensor mode; scalar mode trains on one
                      document a step [default: 32]
  --dtype DTYPE       float32 or float64, for tensor mode [default: float32]
  --eval-every N      Also report the validation loss every N steps (0: only at the
                      end) [default: 0]
  --val-docs N        Validation documents to evaluate, the first N of the held-out ones;
                      auto: all in tensor mode, 200 in scalar mode [default: auto]
  --last-n N          The summary's mean loss is over the last N steps [default: 100]
  --log-every N       Print a step line every N steps (the first and last always print);
                      auto: every step in scalar mode, 100 lines a run in tensor
                      mode [default: auto]
  --out DIR           Folder for the run record; it must not hold one already
                      [default: results/runs/DATE-TIME-MODE-seedS]

Sampling options:
  --samples N         Samples train prints after training [default: 20]
  --temperature T     Softmax temperature, > 0; lower is more conservative [default: 0.5]
  --checkpoint PATH   A checkpoint.json written by train.
  --num N             Samples to print [default: 20]
  --prompt TEXT       Begin every sample with TEXT and continue it [default: ]

Exit status: 0 on success; 1 on an error (one line on stderr, no traceback, no
half-written file); 2 when training diverges (the record up to that step is kept);
130 when interrupted with Ctrl-C (the record up to that step is kept).
"""
import base64
import csv
import io
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
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


class UserError(Exception):
    """Anything a user can get wrong, told in one line."""


# ---------------------------------------------------------------------------
# Options: docopt gives strings; they are converted and checked here, in one place.
def parse_config(args):
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
        return None if args[opt] == 'auto' else number(opt, int, 1)

    mode = args['--mode']
    if mode not in ('scalar', 'tensor'):
        raise UserError(f"--mode must be scalar or tensor, got {mode!r}")
    cfg = dict(mode=mode, temperature=number('--temperature', float, 0, low_open=True),
               seed=None if args['--seed'] is None else number('--seed', int, 0))
    if args['sample']:
        return dict(cfg, checkpoint=args['--checkpoint'], num=number('--num', int, 0),
                    prompt=args['--prompt'])
    if args['--dtype'] not in ('float32', 'float64'):
        raise UserError(f"--dtype must be float32 or float64, got {args['--dtype']!r}")
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
        samples=number('--samples', int, 0), out=args['--out'], **ADAM)
    if cfg['seed'] is None:
        cfg['seed'] = 42
    if cfg['n_embd'] % cfg['n_head']:
        raise UserError(f"--n-embd ({cfg['n_embd']}) must be divisible by --n-head ({cfg['n_head']})")
    if mode == 'scalar':
        cfg['batch_size'], cfg['dtype'] = 1, 'float64'  # one document a step, Python floats
    return cfg


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


# Checkpoint: JSON with the config, the vocabulary, and every weight by its reference name
# as little-endian float64 bytes in base64, exact on reload and free of pickle.
def save_checkpoint(path, model, chars, step, rng=None, extra=None):
    weights = {}
    for name, w in model.weights().items():
        a = np.asarray(w, dtype='<f8')
        weights[name] = dict(shape=list(a.shape), float64=base64.b64encode(a.tobytes()).decode())
    ckpt = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                config={k: model.config[k] for k in MODEL_KEYS}, vocab=''.join(chars),
                step=step, rng_state=rng.getstate() if rng else None, weights=weights,
                **(extra or {}))
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
    config, chars, weights = ckpt.get('config'), ckpt.get('vocab'), ckpt.get('weights')
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
    if not isinstance(weights, dict) or set(weights) != set(expected):
        raise bad(f"weights should be exactly {', '.join(expected)}")
    arrays = {}
    for name, shape in expected.items():
        w = weights[name]
        try:
            a = np.frombuffer(base64.b64decode(w['float64'], validate=True), dtype='<f8')
            arrays[name] = a.reshape(w['shape']).astype(np.float64)
        except (TypeError, KeyError, ValueError) as e:
            raise bad(f"weight {name} is malformed ({e})") from None
        if list(arrays[name].shape) != list(shape):
            raise bad(f"weight {name} has shape {list(arrays[name].shape)}, "
                      f"the config says {list(shape)}")
    return config, chars, arrays, ckpt


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


def environment(cfg, start):
    commit, dirty = git_commit()
    return dict(seed=cfg['seed'], mode=cfg['mode'],
                backend='python' if cfg['mode'] == 'scalar' else f"numpy+numba {cfg['dtype']}",
                commit=commit, commit_dirty=dirty, python=platform.python_version(),
                numpy=np.__version__, numba=version_of('numba'), cpu=cpu_model(),
                cores=os.cpu_count(), start_time=start.isoformat(timespec='seconds'),
                argv=sys.argv[1:])


def new_run_dir(cfg, start):
    out = cfg['out']
    if out == 'results/runs/DATE-TIME-MODE-seedS':
        out = os.path.join(ROOT, 'results', 'runs',
                           f"{start:%Y%m%d-%H%M%S}-{cfg['mode']}-seed{cfg['seed']}")
        base, i = out, 1
        while os.path.exists(out):
            i += 1
            out = f"{base}-{i}"
    if os.path.exists(os.path.join(out, 'metrics.json')):
        raise UserError(f"{out} already holds a run record; choose another --out")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror}") from None
    return out


# ---------------------------------------------------------------------------
# train
def format_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def cmd_train(cfg):
    start = datetime.now(timezone.utc)
    docs = data.load_docs(cfg['data'], cfg['fetch'])
    tok = data.Tokenizer.from_docs(docs)
    rng = random.Random(cfg['seed'])  # the run's one generator: shuffle, weights, samples
    train_docs, val_docs = data.split_docs(docs, rng, cfg['val_fraction'])
    lib = model_lib(cfg['mode'])
    model = build_model(cfg, tok.vocab_size, rng)
    n_params = sum(len(row) for mat in model.weights().values() for row in mat)
    bs = cfg['block_size']
    train_tokens = [tok.frame(d, bs) for d in train_docs]
    n_val = len(val_docs) if cfg['val_docs'] is None and cfg['mode'] == 'tensor' else \
        min(len(val_docs), cfg['val_docs'] or 200)
    val_tokens = [tok.frame(d, bs) for d in val_docs[:n_val]]
    log_every = cfg['log_every'] or (1 if cfg['mode'] == 'scalar' else max(1, cfg['steps'] // 100))
    out = new_run_dir(cfg, start)
    cfg = dict(cfg, data_sha256=data.sha256_of(cfg['data']), out=out)
    print(f"num docs: {len(docs)} ({len(train_docs)} train, {len(val_docs)} validation)")
    print(f"vocab size: {tok.vocab_size}\nnum params: {n_params}")
    print(f"mode: {cfg['mode']}, seed {cfg['seed']}, run record: {os.path.relpath(out)}")

    def evaluate():
        return lib.evaluate(model, val_tokens) if val_tokens else None

    kwargs = dict(batch_size=cfg['batch_size']) if cfg['mode'] == 'tensor' else {}
    losses, val_history, status = [], [], 'completed'
    n_tokens, train_time, t0 = 0, 0.0, time.perf_counter()
    try:
        for step, loss, n in lib.train(model, train_tokens, cfg['steps'], lr=cfg['lr'], **kwargs):
            losses.append(loss)
            n_tokens += n
            if not math.isfinite(loss):
                status = 'diverged'
                print(f"step {step:4d} / {cfg['steps']:4d} | loss {loss:.4f}")
                break
            if step % log_every == 0 or step in (1, cfg['steps']):
                train_time += time.perf_counter() - t0
                rate = step / train_time
                print(f"step {step:4d} / {cfg['steps']:4d} | loss {loss:.4f} | {rate:.1f} steps/s"
                      f" | {n_tokens / train_time:.0f} tok/s | eta {format_time((cfg['steps'] - step) / rate)}",
                      flush=True)
                t0 = time.perf_counter()
            if cfg['eval_every'] and step % cfg['eval_every'] == 0 and step < cfg['steps']:
                train_time += time.perf_counter() - t0
                val_history.append((step, evaluate()))
                print(f"step {step:4d} / {cfg['steps']:4d} | val loss {val_history[-1][1]:.4f}")
                t0 = time.perf_counter()
    except KeyboardInterrupt:
        status = 'interrupted'
        print("\ninterrupted: writing the run record up to the last finished step")
    except (ArithmeticError, ValueError) as e:  # scalar mode: math.exp overflow, log(0)
        status = 'diverged'
        losses.append(math.nan)
        print(f"step {len(losses):4d} / {cfg['steps']:4d} | loss nan ({e})")
    train_time += time.perf_counter() - t0
    steps_done = len(losses)

    val_loss = evaluate() if status == 'completed' else None
    if val_loss is not None:
        val_history.append((steps_done, val_loss))
    last_n = min(cfg['last_n'], steps_done)
    metrics = dict(
        status=status, steps=steps_done, final_loss=losses[-1] if losses else None,
        mean_loss_last_n=sum(losses[-last_n:]) / last_n if last_n else None, last_n=last_n,
        val_loss=val_loss, val_docs=len(val_tokens), val_history=val_history,
        steps_per_s=steps_done / train_time if train_time else None,
        tokens_per_s=n_tokens / train_time if train_time else None, tokens=n_tokens,
        train_time_s=train_time, num_params=n_params,
        environment=environment(cfg, start))
    print(f"--- summary: {status} after {steps_done} steps ---")
    if steps_done:
        print(f"final loss {metrics['final_loss']:.4f} | mean of the last {last_n} steps "
              f"{metrics['mean_loss_last_n']:.4f} | validation loss "
              f"{'n/a' if val_loss is None else f'{val_loss:.4f}'} ({len(val_tokens)} docs)")
        print(f"{metrics['steps_per_s']:.1f} steps/s | {metrics['tokens_per_s']:.0f} tokens/s | "
              f"{format_time(train_time)} training")

    samples = []
    if status == 'completed':
        save_checkpoint(os.path.join(out, 'checkpoint.json'), model, tok.chars, steps_done, rng)
        if cfg['samples']:
            print(f"--- samples (temperature {cfg['temperature']}) ---")
        for i in range(cfg['samples']):
            samples.append(tok.decode(model.sample(rng, tok.bos, cfg['temperature'])))
            print(f"sample {i + 1:2d}: {samples[-1]}")
    elif status == 'interrupted' and steps_done:
        save_checkpoint(os.path.join(out, 'checkpoint.json'), model, tok.chars, steps_done, rng)
    write_run_record(out, cfg, metrics, losses, samples)
    print(f"run record: {os.path.relpath(out)}")
    if status == 'diverged':
        print(f"error: training diverged at step {steps_done} (loss {losses[-1]}); try a lower "
              f"--lr. The record up to that step is in {os.path.relpath(out)}", file=sys.stderr)
        return 2
    return 130 if status == 'interrupted' else 0


def write_run_record(out, cfg, metrics, losses, samples):
    write_json(os.path.join(out, 'config.json'), dict(command='train', **cfg))
    rows = io.StringIO()
    w = csv.writer(rows, lineterminator='\n')
    w.writerow(['step', 'loss'])
    w.writerows((i + 1, repr(loss)) for i, loss in enumerate(losses))
    write_atomic(os.path.join(out, 'losses.csv'), rows.getvalue())
    write_atomic(os.path.join(out, 'samples.txt'), ''.join(s + '\n' for s in samples))
    write_json(os.path.join(out, 'metrics.json'), metrics)  # last: its presence marks a record


# ---------------------------------------------------------------------------
# sample
def cmd_sample(cfg):
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
    elif ckpt.get('rng_state'):
        rng = restore_rng(ckpt['rng_state'])
    else:
        rng = random.Random(42)
    model = build_model(dict(config, mode=cfg['mode'], dtype='float64'), config['vocab_size'],
                        random.Random(0))
    model.load_weights(weights)
    for i in range(cfg['num']):
        ids = model.sample(rng, tok.bos, cfg['temperature'], prompt)
        print(f"sample {i + 1:2d}: {cfg['prompt']}{tok.decode(ids)}")


# ---------------------------------------------------------------------------
def parse_args(argv):
    try:
        return docopt(__doc__, argv)
    except DocoptExit as e:
        first = str(e).splitlines()[0] if str(e) else ''
        known = set(re.findall(r'--[a-z0-9-]+', __doc__))
        unknown = [a.split('=')[0] for a in argv if a.startswith('-')
                   and a.split('=')[0] not in known | {'-h'}]
        given = [a.split('=')[0] for a in argv if a.startswith('--')]
        twice = [a for a in given if given.count(a) > 1]
        if unknown:
            why = f"unknown option {unknown[0]}"
        elif twice:
            why = f"{twice[0]} is given twice"
        elif not argv or argv[0] not in ('train', 'sample'):
            why = "the first argument must be a command: train or sample"
        elif argv[0] == 'sample' and '--checkpoint' not in ' '.join(argv):
            why = "sample needs --checkpoint PATH"
        elif first.startswith('--'):
            why = first  # docopt's own words, e.g. "--steps requires argument"
        else:
            why = f"these arguments fit no usage line of {argv[0]}"
        raise UserError(f"{why} (see: python cli.py --help)") from None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        cfg = parse_config(args)
        return (cmd_train if args['train'] else cmd_sample)(cfg) or 0
    except (UserError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
