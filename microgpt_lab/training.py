"""
training.py: one training run, start to finish, and its record.

Read top to bottom: the run, in named stages as nanoGPT's train.py reads (its data, the
model and optimizer, the loop, the end, the record), with the status decided in one place;
then each stage; stopping cleanly on a signal; the two models behind one interface; and
re-running (`--from`) or continuing (`--resume`) a recorded run, whose files are checked as
they are read back. The settings a run takes are in settings.py.

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
from microgpt_lab import checkpoint, efficiency, plots, records, settings
from microgpt_lab.records import UserError


class Stopped(Exception):
    """The run ends before it completes: .status is 'stopped' (--stop-after), 'interrupted'
    (a signal) or 'diverged'."""
    def __init__(self, status):
        super().__init__(status)
        self.status = status


# ---------------------------------------------------------------------------
# The run. numpy's overflow warnings stay quiet: a run that overflows is caught as diverged.
@np.errstate(all='ignore')
def run(cfg, out, source, resumed=None, should_stop=lambda: False, write_to=None,
        data_sha256=None):
    """Train as cfg says on source (documents, or a text), print progress, and write the
    record to the folder out; return the metrics. `resumed` continues a stopped run (see
    recorded_run). Once should_stop() is true, the run stops after the step under way and
    records that it was interrupted; so it does if that happens during the final
    evaluation or the samples, and --resume then finishes them. (On a machine that has
    neither cfg['data'] nor out, an ablation's worker: the record is written to write_to,
    for out, and says that the data's sha256 is data_sha256.)"""
    start = records.now()
    records.reset_peak_memory()  # this run's own peak, even in an ablation's worker
    # data: the run's one generator shuffles it, then draws the weights, batches and samples
    rng = random.Random(cfg['seed'])
    d = run_data(cfg, source, rng)
    # the model and its optimizer: new, or as a stopped run's checkpoint left them
    if resumed:
        model, adam, rng, progress = restored(cfg, resumed, d.tok)
    else:
        model = build_model(cfg, d.tok.vocab_size, rng)
        adam, progress = optimizer(cfg, model), Progress()
    cfg = dict(cfg, data=os.path.abspath(cfg['data']),
               data_sha256=data_sha256 or data.sha256_of(cfg['data']),
               out=os.path.abspath(out), threads=use_threads(cfg))
    n_params = sum(np.size(w) for w in model.weights().values())
    print_header(cfg, d, n_params, out, progress.step if resumed else None)
    warmup_s = warm_up(cfg)
    env = records.environment(cfg['seed'], cfg['mode'], 'python floats' if cfg['mode'] == 'scalar'
                              else f"numpy+numba {cfg['dtype']}", start)  # what ran, threads too
    # the loop, then the end: the final validation and the samples. Any stage can stop the
    # run (Stopped), and this is where its status is decided.
    status, val_loss, samples = 'completed', None, []
    try:
        train_loop(cfg, model, adam, batches(cfg, d, rng), d.val, progress, should_stop)
        val_loss = final_validation(cfg, model, d, progress)
        if should_stop():
            raise Stopped('interrupted')
        # from a copy of the generator: the checkpoint keeps its state before the samples,
        # so that --resume, or `sample`, draws the same ones
        samples = draw_samples(cfg, model, d, copy_of(rng), should_stop)
    except Stopped as stop:
        status = stop.status
        if status == 'interrupted':
            val_loss = None  # --resume validates again
    if val_loss is not None:
        progress.val_history.append((progress.step, val_loss, progress.train_time_s))
    metrics = summary(cfg, status, progress, val_loss, d, warmup_s, n_params, env)
    show_samples(cfg, d, samples, metrics)
    # the record: every file whole, metrics.json last; a diverged run has no checkpoint
    files = {'config.json': records.json_text(dict(command='train', **cfg)),
             'losses.csv': records.csv_text(['step', 'loss'], (
                 (i + 1, repr(loss)) for i, loss in enumerate(progress.losses))),
             'samples.txt': ''.join(s + '\n' for s in samples)}
    if status != 'diverged':
        files['checkpoint.json'] = lambda: checkpoint.checkpoint_pieces(  # written as made
            model, d.tok.chars, progress.step, rng, adam, cfg['data_format'])
    files['metrics.json'] = records.json_text(metrics)
    records.write_record(write_to or out, files)
    draw_losses(write_to or out, progress.losses, progress.val_history, cfg)
    print(f"run record: {os.path.relpath(out)}")
    if status in ('stopped', 'interrupted'):
        print(f"to continue: {records.program()} train --resume {os.path.relpath(out)}")
    return metrics


# ---------------------------------------------------------------------------
# Data: the split, and what a step trains on.
class RunData(NamedTuple):
    tok: data.Tokenizer
    train: object       # framed training documents, or the training part of a text's ids
    val: object         # framed validation documents, or a text's windows [n, block + 1]
    check: object       # a batch to check the last update on when there is no validation
    sizes: str          # what the run prints of the split
    docs: tuple = None  # (training, validation) documents, as text; None for a text


def run_data(cfg, source, rng):
    """A run's data (documents, or a text) tokenized and split: a text's first part trains
    and the rest validates, all of its windows; documents are shuffled with rng and the
    last ones held out (all in tensor mode; 200 in scalar mode, unless --val-docs)."""
    bs = cfg['block_size']
    if cfg['data_format'] == 'text':
        tok = data.Tokenizer.from_text(source)
        train, val = data.split_text(np.array(tok.encode(source)), cfg['val_fraction'])
        return RunData(tok, train, data.tiled_windows(val, bs), train[None, :bs + 1],
                       f"{len(source)} characters ({len(train)} train, {len(val)} validation)")
    tok = data.Tokenizer.from_docs(source)
    train_docs, val_docs = data.split_docs(source, rng, cfg['val_fraction'])
    train = [tok.frame(doc, bs) for doc in train_docs]
    return RunData(tok, train, [tok.frame(doc, bs) for doc in val_docs[:val_docs_of(cfg)]], train[:1],
                   f"{len(source)} ({len(train_docs)} train, {len(val_docs)} validation)",
                   (train_docs, val_docs))


def val_docs_of(cfg):
    """How many held-out documents a run evaluates: None for all of them (tensor mode's
    default), else at most this many (scalar mode's default: 200, its evaluation is slow)."""
    if cfg['val_docs'] is None and cfg['mode'] == 'tensor':
        return None
    return cfg['val_docs'] or 200


def batches(cfg, d, rng):
    """What the model's train() takes: the framed documents (step s takes the s-th batch of
    them), or for a text a function of the step, which draws its windows from rng."""
    if cfg['data_format'] == 'text':
        return lambda step: data.random_windows(d.train, rng, cfg['batch_size'], cfg['block_size'])
    return d.train


def copy_of(rng):
    twin = random.Random()
    twin.setstate(rng.getstate())
    return twin


# ---------------------------------------------------------------------------
# The loop: a line per step, validation on a schedule, and where it stops.
class Progress:
    """What a run has done: a loss per step, the validation history, training time (the
    warm-up and evaluations left out) and tokens. A record keeps it; --resume restores it."""
    def __init__(self, losses=(), val_history=(), train_time_s=0.0, tokens=0):
        self.losses, self.val_history = list(losses), list(val_history)
        self.train_time_s, self.tokens = train_time_s, tokens

    @property
    def step(self):
        return len(self.losses)


def train_loop(cfg, model, adam, batches, val, progress, should_stop):
    """Train from progress.step on to --steps, adding each step to progress. Raises Stopped
    at --stop-after, after the step under way once should_stop(), and when a loss or a
    weight is no longer finite."""
    steps, first = cfg['steps'], progress.step
    last = min(steps, cfg['stop_after'] or steps)
    log_every = cfg['log_every'] or (1 if cfg['mode'] == 'scalar' else max(1, steps // 100))
    lib, session_start, tokens_before = model_lib(cfg['mode']), progress.train_time_s, progress.tokens
    clock = Clock(session_start)
    if should_stop():  # a signal during the warm-up
        raise Stopped('interrupted')
    try:
        for step, loss, n in lib.train(model, batches, steps, lr=cfg['lr'], adam=adam,
                                       start_step=first, **train_kwargs(cfg)):
            progress.losses.append(loss)
            progress.tokens += n
            if not (math.isfinite(loss) and weights_finite(model)):
                print(f"step {step:4d} / {steps:4d} | loss {loss:.4f}")
                raise Stopped('diverged')
            if step % log_every == 0 or step in (1, first + 1, last):
                session = max(clock() - session_start, 1e-9)  # this session's time
                rate = (step - first) / session
                print(f"step {step:4d} / {steps:4d} | loss {loss:.4f} | {rate:.1f} steps/s | "
                      f"{(progress.tokens - tokens_before) / session:.0f} tok/s | "
                      f"eta {format_time((last - step) / rate)}", flush=True)
            if cfg['eval_every'] and step % cfg['eval_every'] == 0 and step < steps:
                with clock.paused() as train_time:
                    progress.val_history.append((step, evaluate(lib, model, val), train_time))
                print(f"step {step:4d} / {steps:4d} | val loss {progress.val_history[-1][1]:.4f} "
                      f"| {format_time(train_time)} training")
            if step == last < steps:
                raise Stopped('stopped')
            if should_stop():
                raise Stopped('interrupted')
    except (ArithmeticError, ValueError) as e:  # scalar mode: math.exp overflow, log(0)
        progress.losses.append(math.nan)
        print(f"step {progress.step:4d} / {steps:4d} | loss nan ({e})")
        raise Stopped('diverged') from None
    finally:
        progress.train_time_s = clock()


class Clock:
    """Seconds of training: those before this session (a resumed run's), plus this
    session's, with the evaluations taken out (paused)."""
    def __init__(self, before):
        self.before, self.t0 = before, time.perf_counter()

    def __call__(self):
        return self.before + time.perf_counter() - self.t0

    @contextlib.contextmanager
    def paused(self):
        before = self()
        yield before
        self.before, self.t0 = before, time.perf_counter()


def evaluate(lib, model, val):
    """The mean loss over the validation data; None when there is none."""
    return lib.evaluate(model, val) if len(val) else None


def format_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def weights_finite(model):
    """Whether every weight is a finite number: an update can overflow while the loss that
    led to it was still finite. (Scalar mode sums them, in one fast pass: a sum is finite
    only if every term is, or they are so large, near 1e308, that the run diverged anyway.)"""
    if isinstance(model.params[0].data, np.ndarray):
        return all(np.isfinite(p.data).all() for p in model.params)
    return math.isfinite(sum(map(operator.attrgetter('data'), model.params)))


# ---------------------------------------------------------------------------
# The end: the last validation, the summary, the samples.
def final_validation(cfg, model, d, progress):
    """The validation loss after the last step, None without validation data. The last
    update can break the model: a loss that is not finite (on the validation data, or else
    on a training batch) raises Stopped('diverged')."""
    lib = model_lib(cfg['mode'])
    try:
        val_loss = evaluate(lib, model, d.val)
        loss = lib.evaluate(model, d.check) if val_loss is None else val_loss
    except (ArithmeticError, ValueError):  # scalar mode: math.exp overflow, log(0)
        loss = math.nan
    if not math.isfinite(loss):
        print(f"step {progress.step:4d} / {cfg['steps']:4d} | the model after this step gives NaN")
        raise Stopped('diverged')
    return val_loss


def summary(cfg, status, progress, val_loss, d, warmup_s, n_params, env):
    """The run's metrics (metrics.json), printed as the summary."""
    losses, steps, time_s = progress.losses, progress.step, progress.train_time_s
    val_size = len(d.val)
    flops = efficiency.flops_per_token(cfg, d.tok.vocab_size, efficiency.mean_keys(d, cfg))
    gflops = progress.tokens / time_s * flops / 1e9 if steps else None
    peak = efficiency.matmul_peak(  # a few ms: bench's measurement is the careful one
        cfg, d.tok.vocab_size, efficiency.tokens_per_step(d, cfg),
        cfg['dtype'] if cfg['mode'] == 'tensor' else 'float64', tries=2, least_s=0.0005) \
        if steps else None
    last_n = min(cfg['last_n'], steps)
    metrics = dict(
        status=status, steps=steps, final_loss=losses[-1] if losses else None,
        mean_loss_last_n=sum(losses[-last_n:]) / last_n if last_n else None, last_n=last_n,
        val_loss=val_loss, val_docs=val_size, val_history=progress.val_history,
        steps_per_s=steps / time_s if steps else None,
        tokens_per_s=progress.tokens / time_s if steps else None, tokens=progress.tokens,
        train_time_s=time_s, warmup_s=warmup_s, num_params=n_params,
        model_flops_per_token=flops, model_gflops_per_s=gflops, matmul_peak_gflops_per_s=peak,
        share_of_peak=gflops / peak if steps else None,
        peak_memory_mb=records.peak_memory_mb(), environment=env)
    print(f"--- summary: {status} after {steps} steps ---")
    if steps:
        print(f"final loss {metrics['final_loss']:.4f} | mean of the last {last_n} steps "
              f"{metrics['mean_loss_last_n']:.4f} | validation loss "
              f"{'n/a' if val_loss is None else f'{val_loss:.4f}'} ({val_size} "
              f"{'windows' if cfg['data_format'] == 'text' else 'docs'})")
        print(f"{metrics['steps_per_s']:.1f} steps/s | {metrics['tokens_per_s']:.0f} tokens/s | "
              f"{format_time(time_s)} training" + (
                  f" | {warmup_s:.1f} s numba warm-up, not counted" if cfg['mode'] == 'tensor' else ''))
        print(f"model {flops / 1e6:.3g} MFLOP/token: {gflops:.3g} GFLOP/s, "
              f"{metrics['share_of_peak']:.1%} of the matmul peak at its shapes "
              f"({peak:.0f} GFLOP/s, measured now) | peak memory {metrics['peak_memory_mb']:.0f} MB")
    return metrics


def draw_samples(cfg, model, d, rng, should_stop):
    """What a finished run writes: --samples documents, or for a text one passage of
    --length characters, begun at a newline (or at the text's first character). Raises
    Stopped when should_stop() becomes true meanwhile, or the model's probabilities are
    not numbers (it diverged on its last update)."""
    temperature, top_k, tok = cfg['temperature'], cfg['top_k'], d.tok
    samples = []
    try:
        if cfg['data_format'] == 'text' and cfg['length']:
            start = [tok.ids['\n']] if '\n' in tok.ids else [int(d.train[0])]
            ids = list(start)
            for chunk in passage(model, rng, start, cfg['length'], temperature, top_k):
                ids += chunk
                if should_stop():
                    raise Stopped('interrupted')
            samples.append(tok.decode(ids))
        for _ in range(cfg['samples'] if cfg['data_format'] == 'lines' else 0):
            samples.append(tok.decode(model.sample(rng, tok.bos, temperature, top_k=top_k)))
            if should_stop():
                break
    except ValueError:  # random.choices: the probabilities are not finite
        print("the model gives NaN probabilities: it diverged on its last update")
        raise Stopped('diverged') from None
    if should_stop():
        raise Stopped('interrupted')
    return samples


def passage(model, rng, start, length, temperature, top_k, chunk=100):
    """A text's passage of `length` ids after the ids `start`, drawn `chunk` ids at a time
    (the same draws as one call: the model sees the last block_size ids either way), so
    that a long one can be stopped, or shown as it grows."""
    ids = list(start)
    for i in range(0, length, chunk):
        new = model.generate(rng, ids[-model.block_size:], min(chunk, length - i),
                             temperature, top_k)
        ids += new
        yield new


def show_samples(cfg, d, samples, metrics):
    """Print the samples, and for documents the shares of them that are training documents,
    held-out ones, or new (added to the metrics)."""
    temperature = cfg['temperature']
    if cfg['data_format'] == 'text':
        for passage in samples:
            print(f"--- passage (temperature {temperature}, {cfg['length']} characters) ---")
            print(passage, flush=True)
    elif samples:
        print(f"--- samples (temperature {temperature}) ---")
        for i, sample in enumerate(samples):
            print(f"sample {i + 1:2d}: {sample}")
        metrics['samples'] = sample_shares(samples, *d.docs)
        print("samples: {train:.0%} training documents, {val:.0%} held-out validation "
              "documents, {new:.0%} new".format(**metrics['samples']))
    if metrics['status'] == 'interrupted':
        print(f"interrupted after step {metrics['steps']}: the record keeps every finished step")


def sample_shares(samples, train_docs, val_docs):
    """How many samples are training documents, held-out validation documents, or new."""
    train, val = set(train_docs), set(val_docs)
    n = len(samples) or 1
    return dict(train=sum(s in train for s in samples) / n,
                val=sum(s in val and s not in train for s in samples) / n,
                new=sum(s not in train and s not in val for s in samples) / n)


def draw_losses(out, losses, val_history, cfg):
    """losses.png beside the record, when matplotlib is there: a picture, not part of it."""
    title = (f"{os.path.basename(cfg['data'])}: n_embd {cfg['n_embd']}, n_layer {cfg['n_layer']}, "
             f"block {cfg['block_size']}, batch {cfg['batch_size']}, lr {cfg['lr']}")
    if not losses:  # stopped before its first step: nothing to draw
        return
    try:
        if not plots.run_losses(os.path.join(out, 'losses.png'), losses, val_history,
                                title):
            print(f"losses.png skipped: matplotlib is not installed ({plots.GET_MATPLOTLIB})")
    except Exception as e:  # whatever fails in the picture, the record stands
        print(f"losses.png not written: {getattr(e, 'strerror', None) or str(e).strip()[:200]}")


# ---------------------------------------------------------------------------
# The start: the header, and the numba warm-up.
def print_header(cfg, d, n_params, out, resumed_after):
    text = cfg['data_format'] == 'text'
    print(f"num {'characters' if text else 'docs'}: {d.sizes}")
    print(f"vocab size: {d.tok.vocab_size}\nnum params: {n_params}")
    print(f"mode: {cfg['mode']}{' ' + cfg['dtype'] if cfg['mode'] == 'tensor' else ''}, "
          f"seed {cfg['seed']}, {cfg['threads']} thread(s), run record: {os.path.relpath(out)}"
          f"{f', resuming after step {resumed_after}' if resumed_after is not None else ''}")


def use_threads(cfg):
    """Run BLAS and numba with cfg's thread count (None: every core); returns that count,
    which the run records. The count is a setting: OpenBLAS splits a product's sums across
    its threads, so they round differently with another count. (numba's kernels give the
    same numbers with any count; it runs at most the threads it started with.)"""
    import threadpoolctl
    n = cfg['threads'] or os.cpu_count() or 1
    threadpoolctl.threadpool_limits(n)
    if cfg['mode'] == 'tensor':
        import numba
        model_lib('tensor').configure_process()  # its threading layer, before its threads start
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return n


def warm_up(cfg):
    """Seconds that numba took to compile (or load from its cache) every kernel, now, so
    that the training time counts training only."""
    t0 = time.perf_counter()
    if cfg['mode'] == 'tensor':
        model_lib('tensor').warm_up(cfg['dtype'])
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------
# Stopping: a signal asks the run to stop where it is consistent, not in the middle.
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals():
    """Within, Ctrl-C (SIGINT), SIGTERM (what timeout, docker and systemd send) and SIGHUP
    (a terminal or ssh session that goes away) do not end the program: each appends its
    number to the yielded list, which the work checks after every training step, so that
    it stops there and writes its record."""
    caught = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in STOPPING}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------------
# The two implementations of the model, behind the same names.
def model_lib(mode):
    """The module that implements a mode: microgpt (scalar) or tensorgpt (tensor)."""
    if mode == 'scalar':
        import microgpt
        return microgpt
    bad = numba_environment()
    if bad:
        raise UserError(bad)
    try:
        import tensorgpt
    except ImportError as e:
        raise UserError(f"--mode tensor needs {e.name}: install the project with pip") from None
    return tensorgpt


def numba_environment():
    """Why numba would refuse to start in this environment (NUMBA_NUM_THREADS=0, say), as a
    phrase; None when it will start."""
    raw = os.environ.get('NUMBA_NUM_THREADS')
    if raw is None or (raw.strip().isdigit() and int(raw) >= 1):
        return None
    return f"NUMBA_NUM_THREADS={raw} in the environment: numba needs a whole number >= 1 (or unset it)"


def build_model(cfg, vocab_size, rng):
    """A new model as cfg says, its weights drawn from rng."""
    extra = dict(dtype=cfg['dtype']) if cfg['mode'] == 'tensor' else {}
    return model_lib(cfg['mode']).GPT(vocab_size, rng, init_std=cfg['init_std'], **extra,
                                      **{name: cfg[name] for name in settings.MODEL
                                         if cfg['mode'] in settings.SETTINGS[name].modes})


def from_checkpoint(ckpt, mode, dtype='float64'):
    """(model, tokenizer) of a loaded checkpoint (checkpoint.load), in either mode."""
    cfg = dict(ckpt['config'], mode=mode, dtype=dtype, init_std=settings.SETTINGS['init_std'].default)
    model = build_model(cfg, ckpt['config']['vocab_size'], random.Random(0))
    model.load_weights(ckpt['weights'])
    return model, data.Tokenizer(ckpt['vocab'], bos=ckpt['data_format'] == 'lines')


def optimizer(cfg, model):
    lib = model_lib(cfg['mode'])
    extra = dict(weight_decay=cfg['weight_decay'], no_decay=model.norm_weights) \
        if cfg['mode'] == 'tensor' else {}
    return lib.Adam(model.params, beta1=cfg['beta1'], beta2=cfg['beta2'], eps=cfg['eps'], **extra)


def train_kwargs(cfg):
    """The model's train() options beyond the reference's, for tensor mode."""
    if cfg['mode'] == 'scalar':
        return {}
    return dict(batch_size=cfg['batch_size'], grad_clip=cfg['grad_clip'], schedule=model_lib(
        'tensor').lr_schedule(cfg['lr'], cfg['steps'], cfg['warmup_steps'], cfg['lr_schedule'],
                              cfg['min_lr']))


def restored(cfg, resumed, tok):
    """(model, optimizer, generator, progress) of a stopped run, as its checkpoint and
    record left them, to continue it on data whose tokenizer is tok."""
    ckpt = resumed['checkpoint']
    model, ckpt_tok = from_checkpoint(ckpt, cfg['mode'], cfg['dtype'])
    if ckpt_tok.chars != tok.chars:
        raise UserError(f"the checkpoint's vocabulary is not that of {cfg['data']}")
    adam = optimizer(cfg, model)
    checkpoint.restore_adam(adam, ckpt['adam'], ckpt['weights'])
    if ckpt['dropout_stream'] and cfg['mode'] == 'tensor':
        model.dropout_stream = model_lib('tensor').DropoutStream(*ckpt['dropout_stream'])
    return model, adam, ckpt['rng'], resumed['progress']


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
RESUMABLE = ('stopped', 'interrupted')  # the statuses --resume continues
RECORD_FIELDS = ('command', 'out', 'data_sha256', 'rerun_of', 'resumed_from',  # not settings
                 'jobs', 'seeds')  # the ablation's, in the records of its runs before issue 14


def recorded_run(src, out, resume):
    """(settings, state): the checked settings of the run recorded in src, to write a new
    record to `out`; and, to continue it (resume), its state: the checkpoint and the
    Progress so far. Else the state is None."""
    path = os.path.join(src, 'config.json')
    rec = records.read_json(path, 'a run record')
    cfg = settings.read(rec, f"{path}:", RECORD_FIELDS)
    sha = records.field(rec, 'data_sha256', path, str,
                        lambda s: re.fullmatch('[0-9a-f]{64}', s), 'a sha256')
    cfg.update(data=settings.recorded_data(cfg['data'], sha, src), out=out)
    if not resume:
        return dict(cfg, rerun_of=os.path.abspath(src)), None

    mpath = os.path.join(src, 'metrics.json')
    metrics = records.read_json(mpath, 'a run record')
    status = records.field(metrics, 'status', mpath, str, lambda s: s in STATUSES,
                           f"one of {', '.join(STATUSES)}")
    if status not in RESUMABLE:
        raise UserError(f"the run in {src} is {status}: only a stopped or interrupted run "
                        "can be resumed")
    cpath = os.path.join(src, 'checkpoint.json')
    ckpt = checkpoint.load(cpath, need_adam=True, need_rng=True)
    for k in settings.MODEL:
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
    progress = Progress(
        records.read_losses(os.path.join(src, 'losses.csv'), ckpt['step']),
        [tuple(e) for e in val_history],
        records.field(metrics, 'train_time_s', mpath, (int, float), number, 'a time in seconds'),
        records.field(metrics, 'tokens', mpath, int, number, 'a token count'))
    state = dict(checkpoint=ckpt, progress=progress)
    return dict(cfg, stop_after=None, resumed_from=os.path.abspath(src)), state


# ---------------------------------------------------------------------------
# What a run needs, checked before anything runs.
def check_data(cfg, source, needed_by=None, at_once=1):
    """A UserError, before anything runs, if the data (documents or a text) cannot make the
    run: a text too short for a window, or no validation data when validation is asked for
    (--eval-every, or by `needed_by`, e.g. 'ablate'); or `at_once` such runs too big for
    the memory."""
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
    check_memory(cfg, vocab, longest, at_once)


def check_memory(cfg, vocab_size, longest_doc, at_once=1):
    """A UserError, before anything is built, if `at_once` such runs would need more memory
    than this machine has: a rough count of the weights with their gradients and Adam's
    moments, and of one step's activations (scalar mode: one graph node per dot product)."""
    C, L, V, B = cfg['n_embd'], cfg['n_layer'], vocab_size, cfg['batch_size']
    T = min(cfg['block_size'], longest_doc + 1)  # positions a document can fill
    params = V * C * (1 if cfg['tie_lm_head'] else 2) + cfg['block_size'] * C + 12 * L * C * C
    if cfg['mode'] == 'scalar':
        need = 150 * params + 80 * T * params
    else:
        size = 4 if cfg['dtype'] == 'float32' else 8
        need = 40 * params + B * T * size * (40 * C * L + 4 * V + 2 * cfg['n_head'] * T * L)
    need *= at_once
    try:
        have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.9 * have:
        runs = f"{at_once} runs at once of " if at_once > 1 else ''
        raise UserError(f"{runs}this model and batch need about {need / 2 ** 30:.0f} GiB of "
                        f"memory, the machine has {have / 2 ** 30:.0f}: choose a smaller "
                        f"--n-embd, --n-layer, --block-size or --batch-size"
                        f"{', or fewer --jobs' if at_once > 1 else ''}")


