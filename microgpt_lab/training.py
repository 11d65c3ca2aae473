"""
training.py: one training run, start to finish, and its record.

Read top to bottom: the settings a run takes and the values each allows; the two models
behind one interface; stopping cleanly on a signal; the run itself (data, model, a line per
step, validation, the summary, samples, the record); then re-running (`--from`) or
continuing (`--resume`) a recorded run, whose files are checked as they are read back.

A run's record is a folder of five files: config.json (every setting, the data's path and
sha256), metrics.json (written last: its presence marks a finished record), losses.csv,
samples.txt and checkpoint.json (see checkpoint.py).
"""
import contextlib
import math
import operator
import os
import random
import re
import signal
import sys
import time
from typing import NamedTuple

import numpy as np

import data
from microgpt_lab import checkpoint, plots, records
from microgpt_lab.records import UserError


# ---------------------------------------------------------------------------
# Settings: every one a run records in config.json, with the values it allows. cli.py
# converts its options to these; a config.json read back is checked by the same rules.
class Rule(NamedTuple):
    kind: object            # int, float, bool, str, or a tuple of the allowed strings
    low: float = None       # the smallest number allowed
    high: float = None      # the largest
    above: bool = False     # low itself is not allowed: the value must be > low
    below: bool = False     # high itself is not allowed
    optional: bool = False  # None is allowed (the command line's 'auto')


SETTINGS = dict(
    data=Rule(str), data_format=Rule(data.FORMATS), fetch=Rule(bool),
    val_fraction=Rule(float, 0, 0.99),
    mode=Rule(('scalar', 'tensor')), dtype=Rule(('float32', 'float64')),
    n_embd=Rule(int, 1), n_head=Rule(int, 1), n_layer=Rule(int, 1), block_size=Rule(int, 1),
    tie_lm_head=Rule(bool), input_rmsnorm=Rule(bool), init_std=Rule(float, 0, above=True),
    seed=Rule(int, 0), steps=Rule(int, 1), batch_size=Rule(int, 1),
    lr=Rule(float, 0, above=True), lr_schedule=Rule(('linear', 'cosine')),
    warmup_steps=Rule(int, 0), min_lr=Rule(float, 0),
    beta1=Rule(float, 0, 1, below=True), beta2=Rule(float, 0, 1, below=True),
    eps=Rule(float, 0, above=True), weight_decay=Rule(float, 0, 1), grad_clip=Rule(float, 0),
    eval_every=Rule(int, 0), val_docs=Rule(int, 1, optional=True), last_n=Rule(int, 1),
    log_every=Rule(int, 1, optional=True), samples=Rule(int, 0), length=Rule(int, 0),
    temperature=Rule(float, 0.001, 1000), top_k=Rule(int, 1, optional=True),
    stop_after=Rule(int, 1, optional=True),
)
# Settings that came after the first records: a config.json without them ran with these.
LATER = dict(data_format='lines', init_std=0.08, lr_schedule='linear', warmup_steps=0,
             min_lr=0.0, weight_decay=0.0, grad_clip=0.0, length=500, top_k=None)
# The reference's optimizer and schedule; scalar mode runs no other.
REFERENCE_OPTIMIZER = dict(lr_schedule='linear', warmup_steps=0, min_lr=0.0, weight_decay=0.0,
                           grad_clip=0.0)


def problem(r, value):
    """Why `value` breaks the Rule r, as a phrase ('must be >= 1, got 0'), or None."""
    if value is None:
        return None if r.optional else "must be given"
    if isinstance(r.kind, tuple):
        return None if value in r.kind else f"must be {' or '.join(r.kind)}, got {value!r}"
    if r.kind in (bool, str):
        return None if type(value) is r.kind else \
            f"must be {'true or false' if r.kind is bool else 'a string'}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int if r.kind is int else (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)):
        return f"must be {'an integer' if r.kind is int else 'a finite number'}, got {value!r}"
    if r.kind is int and abs(value) >= 2 ** 63:
        return f"must be below 2**63, got {str(value)[:12]}... ({len(str(value))} digits)"
    too_low = r.low is not None and (value <= r.low if r.above else value < r.low)
    too_high = r.high is not None and (value >= r.high if r.below else value > r.high)
    if too_low or too_high:
        bounds = [f"{'>' if r.above else '>='} {r.low}" if r.low is not None else None,
                  f"{'<' if r.below else '<='} {r.high}" if r.high is not None else None]
        return f"must be {' and '.join(b for b in bounds if b)}, got {value}"
    return None


def check_settings(cfg, name_of):
    """Raise a UserError for the first setting of cfg that is not allowed, alone or with the
    others. name_of(setting) is how the user knows it: '--n-embd', or 'config.json: n_embd'."""
    for name in SETTINGS:
        why = problem(SETTINGS[name], cfg[name])
        if why:
            raise UserError(f"{name_of(name)} {why}")
    if cfg['n_embd'] % cfg['n_head']:
        raise UserError(f"{name_of('n_embd')} ({cfg['n_embd']}) must be divisible by "
                        f"{name_of('n_head')} ({cfg['n_head']})")
    if cfg['min_lr'] > cfg['lr']:
        raise UserError(f"{name_of('min_lr')} ({cfg['min_lr']}) must be <= {name_of('lr')} ({cfg['lr']})")
    if cfg['warmup_steps'] > cfg['steps']:
        raise UserError(f"{name_of('warmup_steps')} ({cfg['warmup_steps']}) must be <= "
                        f"{name_of('steps')} ({cfg['steps']})")
    if cfg['data_format'] == 'text' and cfg['val_docs'] is not None:
        raise UserError(f"{name_of('val_docs')} counts documents: a text validates on all of "
                        "its held-out part")
    if cfg['mode'] == 'scalar':
        if (cfg['batch_size'], cfg['dtype']) != (1, 'float64'):
            raise UserError(f"{name_of('mode')} scalar trains one document a step in float64: "
                            f"{name_of('batch_size')} must be 1 and {name_of('dtype')} float64")
        for name, reference in dict(REFERENCE_OPTIMIZER, data_format='lines').items():
            if cfg[name] != reference:
                raise UserError(f"{name_of(name)} {cfg[name]} needs --mode tensor: scalar mode "
                                "trains on documents with the reference's optimizer and schedule")


def check_data(cfg, source, needed_by=None):
    """A UserError, before anything runs, if the data (documents or a text) cannot make the
    run: a text too short for a window, or no validation data when validation is asked for
    (--eval-every, or by `needed_by`, e.g. 'ablate'); or a run too big for the memory."""
    if cfg['data_format'] == 'text':
        train, val = data.split_text(source, cfg['val_fraction'])
        if len(train) <= cfg['block_size']:
            raise UserError(f"the text's training part ({len(train)} characters) must be longer "
                            f"than --block-size ({cfg['block_size']})")
        no_validation = (len(val) - 1) // cfg['block_size'] < 1  # no whole window (or no text)
        vocab, longest = len(set(source)), cfg['block_size']
    else:
        no_validation = data.n_validation(len(source), cfg['val_fraction']) == 0
        vocab, longest = len(set(''.join(source))) + 1, max(map(len, source)) + 1
    if no_validation and (cfg['eval_every'] or needed_by):
        what = 'a window of --block-size characters' if cfg['data_format'] == 'text' else \
            f"a document ({len(source)} document(s))"
        raise UserError(f"{needed_by or '--eval-every'} needs validation data, but --val-fraction "
                        f"{cfg['val_fraction']} leaves not even {what} for it")
    check_memory(cfg, vocab, longest)


def check_memory(cfg, vocab_size, longest_doc):
    """A UserError, before anything is built, if the run would need more memory than this
    machine has: a rough count of the weights with their gradients and Adam's moments, and
    of one step's activations (scalar mode: one graph node per dot product)."""
    C, L, V, B = cfg['n_embd'], cfg['n_layer'], vocab_size, cfg['batch_size']
    T = min(cfg['block_size'], longest_doc + 1)  # positions a document can fill
    params = V * C * (1 if cfg['tie_lm_head'] else 2) + cfg['block_size'] * C + 12 * L * C * C
    if cfg['mode'] == 'scalar':
        need = 150 * params + 80 * T * params
    else:
        size = 4 if cfg['dtype'] == 'float32' else 8
        need = 40 * params + B * T * size * (40 * C * L + 4 * V + 2 * cfg['n_head'] * T * L)
    try:
        have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.9 * have:
        raise UserError(f"this model and batch need about {need / 2 ** 30:.0f} GiB of memory, "
                        f"the machine has {have / 2 ** 30:.0f}: choose a smaller --n-embd, "
                        "--n-layer, --block-size or --batch-size")


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
        raise UserError(f"--mode tensor needs {e.name}: install the project with pip") from None
    return tensorgpt


def build_model(cfg, vocab_size, rng):
    model_cfg = {k: cfg[k] for k in checkpoint.MODEL_KEYS if k != 'vocab_size'}
    if cfg['mode'] == 'tensor':
        model_cfg['dtype'] = cfg['dtype']
    return model_lib(cfg['mode']).GPT(vocab_size, rng, init_std=cfg.get('init_std', 0.08),
                                      **model_cfg)


def optimizer(cfg, model):
    lib = model_lib(cfg['mode'])
    extra = dict(weight_decay=cfg['weight_decay']) if cfg['mode'] == 'tensor' else {}
    return lib.Adam(model.params, beta1=cfg['beta1'], beta2=cfg['beta2'], eps=cfg['eps'], **extra)


def train_kwargs(cfg):
    """lib.train's options beyond the reference's, for tensor mode."""
    if cfg['mode'] == 'scalar':
        return {}
    return dict(batch_size=cfg['batch_size'], grad_clip=cfg['grad_clip'], schedule=model_lib(
        'tensor').lr_schedule(cfg['lr'], cfg['steps'], cfg['warmup_steps'], cfg['lr_schedule'],
                              cfg['min_lr']))


def weights_finite(model):
    """Whether every weight is a finite number: an update can overflow while the loss that
    led to it was still finite. (Scalar mode sums them, in one fast pass: a sum is finite
    only if every term is, or they are so large, near 1e308, that the run diverged anyway.)"""
    if isinstance(model.params[0].data, np.ndarray):
        return all(np.isfinite(p.data).all() for p in model.params)
    return math.isfinite(sum(map(operator.attrgetter('data'), model.params)))


# ---------------------------------------------------------------------------
# Stopping: a signal asks the run to stop where it is consistent, not in the middle.
@contextlib.contextmanager
def stop_signals():
    """Within, Ctrl-C (SIGINT) and SIGTERM (what timeout, docker and systemd send) do not
    end the program: each appends its number to the yielded list, which the work checks
    after every training step, so that it stops there and writes its record."""
    caught = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def format_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def sample_shares(samples, train_docs, val_docs):
    """How many samples are training documents, held-out validation documents, or new."""
    train, val = set(train_docs), set(val_docs)
    n = len(samples) or 1
    return dict(train=sum(s in train for s in samples) / n,
                val=sum(s in val and s not in train for s in samples) / n,
                new=sum(s not in train and s not in val for s in samples) / n)


# ---------------------------------------------------------------------------
# The run. numpy's overflow warnings stay quiet: a run that overflows is caught as diverged.
@np.errstate(all='ignore')
def run(cfg, out, source, resumed=None, should_stop=lambda: False):
    """Train as cfg says on source (documents, or a text), print progress, and write the
    record to the folder out; return the metrics. `resumed` continues a stopped run (see
    recorded_run). Once should_stop() is true, the run stops after the step under way and
    records that it was interrupted; so it does if that happens during the final
    evaluation or the samples, and --resume then finishes them."""
    start = records.now()
    env = records.environment(cfg['seed'], cfg['mode'], 'python floats' if cfg['mode'] == 'scalar'
                              else f"numpy+numba {cfg['dtype']}", start)  # the code that runs
    rng = random.Random(cfg['seed'])  # the run's one generator: shuffle, weights, batches, samples
    text, bs, B, steps = cfg['data_format'] == 'text', cfg['block_size'], cfg['batch_size'], cfg['steps']
    if text:  # the first part trains, the rest validates; windows at random offsets
        tok = data.Tokenizer.from_text(source)
        train_ids, val_ids = data.split_text(np.array(tok.encode(source)), cfg['val_fraction'])
        train_data = lambda step: data.random_windows(train_ids, rng, B, bs)
        val_tokens = data.tiled_windows(val_ids, bs)
        sizes = f"{len(source)} characters ({len(train_ids)} train, {len(val_ids)} validation)"
    else:     # shuffled documents, the last ones held out
        tok = data.Tokenizer.from_docs(source)
        train_docs, val_docs = data.split_docs(source, rng, cfg['val_fraction'])
        train_data = [tok.frame(d, bs) for d in train_docs]
        n_val = len(val_docs) if cfg['val_docs'] is None and cfg['mode'] == 'tensor' else \
            min(len(val_docs), cfg['val_docs'] or 200)
        val_tokens = [tok.frame(d, bs) for d in val_docs[:n_val]]
        sizes = f"{len(source)} ({len(train_docs)} train, {len(val_docs)} validation)"
    lib = model_lib(cfg['mode'])
    model = build_model(cfg, tok.vocab_size, rng)
    adam = optimizer(cfg, model)
    losses, val_history, start_step, train_time, n_tokens = [], [], 0, 0.0, 0
    if resumed:
        ckpt = resumed['checkpoint']
        if ckpt['vocab'] != ''.join(tok.chars):
            raise UserError(f"the checkpoint's vocabulary is not that of {cfg['data']}")
        model.load_weights(ckpt['weights'])
        checkpoint.restore_adam(adam, ckpt['adam'], ckpt['weights'])
        start_step, rng = ckpt['step'], ckpt['rng']  # train_data draws from this rng on
        losses, val_history = resumed['losses'], resumed['val_history']
        train_time, n_tokens = resumed['train_time_s'], resumed['tokens']
    n_params = sum(np.size(w) for w in model.weights().values())
    log_every = cfg['log_every'] or (1 if cfg['mode'] == 'scalar' else max(1, steps // 100))
    stop = min(steps, cfg['stop_after'] or steps)
    cfg = dict(cfg, data=os.path.abspath(cfg['data']), data_sha256=data.sha256_of(cfg['data']),
               out=os.path.abspath(out))
    print(f"num {'characters' if text else 'docs'}: {sizes}")
    print(f"vocab size: {tok.vocab_size}\nnum params: {n_params}")
    print(f"mode: {cfg['mode']}{' ' + cfg['dtype'] if cfg['mode'] == 'tensor' else ''}, "
          f"seed {cfg['seed']}, run record: {os.path.relpath(out)}"
          f"{f', resuming after step {start_step}' if resumed else ''}")

    # numba compiles (or loads from its cache) every kernel now, timed apart from training.
    t0 = time.perf_counter()
    if cfg['mode'] == 'tensor':
        lib.warm_up(cfg['dtype'])
    warmup_s = time.perf_counter() - t0

    def evaluate():
        return lib.evaluate(model, val_tokens) if len(val_tokens) else None

    # Training time excludes the warm-up and evaluations; a resumed run adds to its own.
    status, first_step, time_before, tokens_before = 'completed', start_step, train_time, n_tokens
    t0 = time.perf_counter()

    def elapsed():
        return train_time + time.perf_counter() - t0

    try:
        with np.errstate(all='ignore'):  # a diverging run is caught below, by its numbers
            steps_run = lib.train(model, train_data, steps, lr=cfg['lr'], adam=adam,
                                  start_step=start_step, **train_kwargs(cfg))
            if should_stop():  # a signal during the warm-up
                status, steps_run = 'interrupted', ()
            for step, loss, n in steps_run:
                losses.append(loss)
                n_tokens += n
                if not (math.isfinite(loss) and weights_finite(model)):
                    status = 'diverged'
                    print(f"step {step:4d} / {steps:4d} | loss {loss:.4f}")
                    break
                if step % log_every == 0 or step in (1, first_step + 1, stop):
                    session_time = max(elapsed() - time_before, 1e-9)
                    rate = (step - first_step) / session_time
                    print(f"step {step:4d} / {steps:4d} | loss {loss:.4f} | {rate:.1f} steps/s | "
                          f"{(n_tokens - tokens_before) / session_time:.0f} tok/s | "
                          f"eta {format_time((stop - step) / rate)}", flush=True)
                if cfg['eval_every'] and step % cfg['eval_every'] == 0 and step < steps:
                    train_time = elapsed()
                    val_history.append((step, evaluate(), train_time))
                    print(f"step {step:4d} / {steps:4d} | val loss {val_history[-1][1]:.4f} | "
                          f"{format_time(train_time)} training")
                    t0 = time.perf_counter()
                if step == stop < steps:
                    status = 'stopped'
                    break
                if should_stop():
                    status = 'interrupted'
                    break
    except (ArithmeticError, ValueError) as e:  # scalar mode: math.exp overflow, log(0)
        status = 'diverged'
        losses.append(math.nan)
        print(f"step {len(losses):4d} / {steps:4d} | loss nan ({e})")
    train_time = elapsed()
    steps_done = len(losses)

    # The end: validation, summary, checkpoint, samples. A signal here still interrupts.
    val_loss = None
    if status == 'completed':  # the last update can break the model: its loss must be finite
        try:
            with np.errstate(all='ignore'):
                val_loss = evaluate()
                final = lib.evaluate(model, train_ids[None, :bs + 1] if text else train_data[:1]) \
                    if val_loss is None else val_loss
        except (ArithmeticError, ValueError):  # scalar mode: math.exp overflow, log(0)
            final = math.nan
        if not math.isfinite(final):
            status, val_loss = 'diverged', None
            print(f"step {steps_done:4d} / {steps:4d} | the model after this step gives NaN")
    if status == 'completed' and should_stop():
        status, val_loss = 'interrupted', None
    if val_loss is not None:
        val_history.append((steps_done, val_loss, train_time))
    ckpt_text = None
    if status != 'diverged':  # the generator's state before the samples: --resume draws them
        ckpt_text = checkpoint.checkpoint_text(model, tok.chars, steps_done, rng, adam,
                                               cfg['data_format'])
    last_n = min(cfg['last_n'], steps_done)
    metrics = dict(
        status=status, steps=steps_done, final_loss=losses[-1] if losses else None,
        mean_loss_last_n=sum(losses[-last_n:]) / last_n if last_n else None, last_n=last_n,
        val_loss=val_loss, val_docs=len(val_tokens), val_history=val_history,
        steps_per_s=steps_done / train_time if steps_done else None,
        tokens_per_s=n_tokens / train_time if steps_done else None, tokens=n_tokens,
        train_time_s=train_time, warmup_s=warmup_s, num_params=n_params, environment=env)
    print(f"--- summary: {status} after {steps_done} steps ---")
    if steps_done:
        print(f"final loss {metrics['final_loss']:.4f} | mean of the last {last_n} steps "
              f"{metrics['mean_loss_last_n']:.4f} | validation loss "
              f"{'n/a' if val_loss is None else f'{val_loss:.4f}'} ({len(val_tokens)} "
              f"{'windows' if text else 'docs'})")
        print(f"{metrics['steps_per_s']:.1f} steps/s | {metrics['tokens_per_s']:.0f} tokens/s | "
              f"{format_time(train_time)} training" + (
                  f" | {warmup_s:.1f} s numba warm-up, not counted" if cfg['mode'] == 'tensor' else ''))

    samples = []
    if status == 'completed':
        try:
            with np.errstate(all='ignore'):
                samples = draw_samples(cfg, model, tok, rng, should_stop,
                                       train_ids[:1] if text else None)
        except ValueError:  # random.choices: the probabilities are not finite
            print("the model gives NaN probabilities: it diverged on its last update")
            status, samples, ckpt_text = 'diverged', [], None
        if samples is None:  # --resume evaluates and samples again
            status, samples, val_loss = 'interrupted', [], None
            val_history.pop()
    if samples and not text:
        metrics['samples'] = sample_shares(samples, train_docs, val_docs)
        print("samples: {train:.0%} training documents, {val:.0%} held-out validation "
              "documents, {new:.0%} new".format(**metrics['samples']))
    metrics.update(status=status, val_loss=val_loss)
    if status == 'interrupted':
        print(f"interrupted after step {steps_done}: the record keeps every finished step")

    files = {'config.json': records.json_text(dict(command='train', **cfg)),
             'losses.csv': records.csv_text(['step', 'loss'], ((i + 1, repr(loss))
                                                             for i, loss in enumerate(losses))),
             'samples.txt': ''.join(s + '\n' for s in samples)}
    if ckpt_text:
        files['checkpoint.json'] = ckpt_text
    files['metrics.json'] = records.json_text(metrics)  # last: its presence marks a record
    records.write_record(out, files)
    draw_losses(out, losses, val_history, cfg)
    print(f"run record: {os.path.relpath(out)}")
    if status in ('stopped', 'interrupted'):
        print(f"to continue: {records.program()} train --resume {os.path.relpath(out)}")
    return metrics


def draw_losses(out, losses, val_history, cfg):
    """losses.png beside the record, when matplotlib is there: a picture, not part of it."""
    title = (f"{os.path.basename(cfg['data'])}: n_embd {cfg['n_embd']}, n_layer {cfg['n_layer']}, "
             f"block {cfg['block_size']}, batch {cfg['batch_size']}, lr {cfg['lr']}")
    try:
        if not plots.run_losses(os.path.join(out, 'losses.png'), losses, val_history,
                                title):
            print(f"losses.png skipped: matplotlib is not installed ({plots.GET_MATPLOTLIB})")
    except Exception as e:  # whatever fails in the picture, the record stands
        print(f"losses.png not written: {getattr(e, 'strerror', None) or str(e).strip()[:200]}")


def draw_samples(cfg, model, tok, rng, should_stop, first_id=None):
    """What a finished run prints: --samples documents, or for a text one passage of
    --length characters, begun at a newline (or at the text's first character, first_id).
    None if should_stop() became true meanwhile."""
    temperature, top_k = cfg['temperature'], cfg['top_k']
    if cfg['data_format'] == 'text':
        if not cfg['length']:
            return []
        start = [tok.ids['\n']] if '\n' in tok.ids else [int(first_id[0])]
        print(f"--- passage (temperature {temperature}, {cfg['length']} characters) ---")
        passage = tok.decode(start + model.generate(rng, start, cfg['length'], temperature, top_k))
        print(passage, flush=True)
        return None if should_stop() else [passage]
    samples = []
    if cfg['samples']:
        print(f"--- samples (temperature {temperature}) ---")
    for i in range(cfg['samples']):
        samples.append(tok.decode(model.sample(rng, tok.bos, temperature, top_k=top_k)))
        print(f"sample {i + 1:2d}: {samples[-1]}", flush=True)
        if should_stop():
            return None
    return samples


def train_command(cfg, source=None, resume=False):
    """`cli.py train`: a new run as cfg says; or, from the record in `source`, a re-run of
    it (--from) or its continuation (--resume, resume=True). Returns the exit status."""
    with stop_signals() as caught:
        resumed = None
        if source:
            cfg, resumed = recorded_run(source, cfg['out'], resume)
        contents = data.load(cfg['data'], cfg['data_format'], cfg['fetch'])  # before any folder
        check_data(cfg, contents)
        out, made = records.new_folder(cfg['out'], 'runs', f"{cfg['mode']}-seed{cfg['seed']}",
                                       records.now())
        with records.owned(out, made=made):
            metrics = run(cfg, out, contents, resumed, should_stop=lambda: bool(caught))
    if metrics['status'] == 'diverged':
        print(f"error: training diverged at step {metrics['steps']}; try a lower --lr or "
              f"--init-std. The record up to that step is in {os.path.relpath(out)}",
              file=sys.stderr)
        return 2
    return 128 + caught[0] if metrics['status'] == 'interrupted' else 0


# ---------------------------------------------------------------------------
# A recorded run, read back: its settings to re-run it, its state to continue it.
STATUSES = ('completed', 'stopped', 'interrupted', 'diverged')


def recorded_data(path, sha256, src):
    """The data file a record names, if it still holds the same bytes; else the data set of
    that name shipped beside this file (names.txt), if that one does."""
    for candidate in (path, os.path.join(data.HERE, os.path.basename(path))):
        if os.path.isfile(candidate) and data.sha256_of(candidate) == sha256:
            return os.path.abspath(candidate)
    raise UserError(f"{path} is missing or has changed since the run in {src} "
                    f"(sha256 {sha256[:12]}...)")


def recorded_run(src, out, resume):
    """(settings, state): the checked settings of the run recorded in src, to write a new
    record to `out`; and, to continue it (resume), its state: checkpoint, losses, validation
    history, training time and tokens so far. Else the state is None."""
    path = os.path.join(src, 'config.json')
    rec = records.read_json(path, 'a run record')
    unknown = sorted(set(rec) - set(SETTINGS) - {'command', 'out', 'data_sha256', 'rerun_of',
                                                  'resumed_from'})
    if unknown:
        raise UserError(f"{path}: {unknown[0]} is not a setting of a run")
    rec = dict(LATER, **rec)
    for name in SETTINGS:
        if name not in rec:
            raise UserError(f"{path}: {name} is missing")
    cfg = {name: rec[name] for name in SETTINGS}
    check_settings(cfg, lambda name: f"{path}: {name}")
    sha = records.field(rec, 'data_sha256', path, str,
                        lambda s: re.fullmatch('[0-9a-f]{64}', s), 'a sha256')
    cfg.update(data=recorded_data(cfg['data'], sha, src), out=out)
    if not resume:
        return dict(cfg, rerun_of=os.path.abspath(src)), None

    mpath = os.path.join(src, 'metrics.json')
    metrics = records.read_json(mpath, 'a run record')
    status = records.field(metrics, 'status', mpath, str, lambda s: s in STATUSES,
                           f"one of {', '.join(STATUSES)}")
    if status not in ('stopped', 'interrupted'):
        raise UserError(f"the run in {src} is {status}: only a stopped or interrupted run "
                        "can be resumed")
    ckpt = checkpoint.load(os.path.join(src, 'checkpoint.json'), need_adam=True, need_rng=True)
    cpath = os.path.join(src, 'checkpoint.json')
    for k in checkpoint.MODEL_KEYS[1:]:
        if ckpt['config'][k] != cfg[k]:
            raise UserError(f"{cpath}: {k} is {ckpt['config'][k]}, {path} says {cfg[k]}")
    if ckpt['step'] > cfg['steps'] or ckpt['adam']['t'] != ckpt['step']:
        raise UserError(f"{cpath}: step {ckpt['step']} (Adam's {ckpt['adam']['t']}) does not fit "
                        f"a run of {cfg['steps']} steps")
    val_history = records.field(
        metrics, 'val_history', mpath, list, lambda h: all(
            isinstance(e, list) and len(e) in (2, 3) and type(e[0]) is int
            and 0 < e[0] <= ckpt['step'] and all(type(x) in (int, float) for x in e[1:])
            for e in h), 'a list of [step, validation loss, training time] up to the checkpoint')
    number = lambda x: not isinstance(x, bool) and x >= 0 and math.isfinite(x)
    state = dict(checkpoint=ckpt, val_history=[tuple(e) for e in val_history],
                 losses=records.read_losses(os.path.join(src, 'losses.csv'), ckpt['step']),
                 train_time_s=records.field(metrics, 'train_time_s', mpath, (int, float), number,
                                            'a time in seconds'),
                 tokens=records.field(metrics, 'tokens', mpath, int, number, 'a token count'))
    return dict(cfg, stop_after=None, resumed_from=os.path.abspath(src)), state
