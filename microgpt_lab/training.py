"""
training.py: one training run, start to finish, and its record.

Read top to bottom: the run, in named stages as nanoGPT's train.py reads (its data, the
model and optimizer, the loop, the end, the record), with the status decided in one place;
then each stage; the `train` command; and re-running (`--from`) or continuing (`--resume`) a
recorded run, whose files are checked as they are read back. The settings a run takes are in
settings.py, the two models behind one interface in models.py, stopping in stopping.py.

A run's record is a folder of five files: config.json (every setting, the data's path and
sha256), metrics.json (written last: its presence marks a finished record), losses.csv,
samples.txt and checkpoint.json (see checkpoint.py).
"""
import contextlib
import math
import os
import random
import re
import sys
import time

import numpy as np

import data
from microgpt_lab import (UserError, checkpoint, efficiency, models, output, plots, provenance,
                          records, sampling, settings, stopping, tokens)


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
    start = provenance.now()
    provenance.reset_peak_memory()  # this run's own peak, even in an ablation's worker
    # data: the run's one generator shuffles it, then draws the weights, batches and samples
    rng = random.Random(cfg['seed'])
    data_sha256 = data_sha256 or data.sha256_of(cfg['data'])
    d = tokens.run_data(cfg, source, rng, data_sha256)
    if cfg.get('rerun_of') and d.tokenizer:
        tokens.same_merges(d.tokenizer, os.path.join(cfg['rerun_of'], 'tokenizer.json'))
    # the model and its optimizer: new, or as a stopped run's checkpoint left them
    if resumed:
        ckpt = resumed['checkpoint']
        if ckpt['tok'] != d.tok:
            raise UserError(f"the checkpoint's tokenizer is not the one {cfg['data']} makes")
        (model, adam), rng, progress = models.restore(cfg, ckpt), ckpt['rng'], resumed['progress']
    else:
        model = models.build(cfg, d.tok.vocab_size, rng)
        adam, progress = models.optimizer(cfg, model), Progress()
    cfg = dict(cfg, data=os.path.abspath(cfg['data']), data_sha256=data_sha256,
               out=os.path.abspath(out), threads=models.use_threads(cfg))
    n_params = models.n_params(cfg, d.tok.vocab_size)
    print_header(cfg, d, n_params, out, progress.step if resumed else None)
    warmup_s = models.warm_up(cfg)
    env = provenance.environment(cfg['seed'], cfg['mode'], 'python floats' if cfg['mode'] == 'scalar'
                              else f"numpy+numba {cfg['dtype']}", start)  # what ran, threads too
    if resumed:  # and what ran the steps before: the record names every kernel its losses had
        env['earlier'] = provenance.sessions_before(resumed['environment'], progress.step)
        note = provenance.kernel_change(cfg, env, progress.step)
        if note:
            print(note)
    # the loop, then the end: the final validation and the samples. Any stage can stop the
    # run (Stopped), and this is where its status is decided.
    status, val, samples = 'completed', (None, None), []
    try:
        train_loop(cfg, model, adam, tokens.batches(cfg, d, rng), d, progress, should_stop)
        val = final_validation(cfg, model, d, progress)
        if should_stop():
            raise stopping.Stopped('interrupted')
        # from a copy of the generator: the checkpoint keeps its state before the samples,
        # so that --resume, or `sample`, draws the same ones
        samples = sampling.draw_samples(cfg, model, d, copy_of(rng), should_stop)
    except stopping.Stopped as stop:
        status = stop.status
        if status == 'interrupted':
            val = (None, None)  # --resume validates again
    if val[0] is not None:
        progress.val_history.append((progress.step, val[0], progress.train_time_s, val[1]))
    metrics = summary(cfg, status, progress, val, d, warmup_s, n_params, env)
    sampling.show_samples(cfg, d, samples, metrics)
    # the record: every file whole, metrics.json last; a diverged run has no checkpoint
    files = {'config.json': records.json_text(dict(command='train', **cfg)),
             'losses.csv': records.csv_text(['step', 'loss'], (
                 (i + 1, repr(loss)) for i, loss in enumerate(progress.losses))),
             'samples.txt': ''.join(s + '\n' for s in samples)}
    if d.tokenizer:
        files['tokenizer.json'] = records.json_text(d.tokenizer)
    if status != 'diverged':
        files['checkpoint.json'] = lambda: checkpoint.checkpoint_pieces(  # written as made
            model, d.tok, progress.step, rng, adam, cfg['data_format'],
            {k: cfg[k] for k in (*settings.SETTINGS, 'data_sha256')})
    files['metrics.json'] = records.json_text(metrics)
    records.write_record(write_to or out, files)
    draw_losses(write_to or out, progress.losses, progress.val_history, cfg)
    print(f"run record: {os.path.relpath(out)}")
    if status in ('stopped', 'interrupted'):
        print(f"to continue: {output.program()} train --resume {os.path.relpath(out)}")
    return metrics


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


def train_loop(cfg, model, adam, batches, d, progress, should_stop):
    """Train from progress.step on to --steps, adding each step to progress. Raises Stopped
    at --stop-after, after the step under way once should_stop(), and when a loss or a
    weight is no longer finite."""
    steps, first = cfg['steps'], progress.step
    last = min(steps, cfg['stop_after'] or steps)
    log_every = cfg['log_every'] or (1 if cfg['mode'] == 'scalar' else max(1, steps // 100))
    session_start, tokens_before = progress.train_time_s, progress.tokens
    clock = Clock(session_start)
    if should_stop():  # a signal during the warm-up
        raise stopping.Stopped('interrupted')
    try:
        for step, loss, n in models.train(cfg, model, batches, adam, start_step=first):
            progress.losses.append(loss)
            progress.tokens += n
            if not (math.isfinite(loss) and models.weights_finite(model)):
                print(f"step {step:4d} / {steps:4d} | loss {loss:.4f}")
                raise stopping.Stopped('diverged')
            if step % log_every == 0 or step in (1, first + 1, last):
                session = max(clock() - session_start, 1e-9)  # this session's time
                rate = (step - first) / session
                print(f"step {step:4d} / {steps:4d} | loss {loss:.4f} | {rate:.1f} steps/s | "
                      f"{(progress.tokens - tokens_before) / session:.0f} tok/s | "
                      f"eta {output.format_time((last - step) / rate)}", flush=True)
            if cfg['eval_every'] and step % cfg['eval_every'] == 0 and step < steps:
                with clock.paused() as train_time:
                    loss, bpb = evaluate(model, d)
                progress.val_history.append((step, loss, train_time, bpb))
                print(f"step {step:4d} / {steps:4d} | val loss {loss:.4f} | val bpb {bpb:.4f} "
                      f"| {output.format_time(train_time)} training")
            if step == last < steps:
                raise stopping.Stopped('stopped')
            if should_stop():
                raise stopping.Stopped('interrupted')
    except (ArithmeticError, ValueError) as e:  # scalar mode: math.exp overflow, log(0)
        progress.losses.append(math.nan)
        print(f"step {progress.step:4d} / {steps:4d} | loss nan ({e})")
        raise stopping.Stopped('diverged') from None
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


def evaluate(model, d):
    """(loss, bits per byte) on the validation data: the mean loss (over documents, of each
    one's mean; or over a text's windows), and nanochat's bits per byte, the nats of every
    target that stands for bytes (BOS does not) over ln 2 times those bytes. (None, None)
    when there is none."""
    if not len(d.val):
        return None, None
    loss, nats = models.validate(model, d.val, d.tok.sizes > 0)
    return loss, nats / (math.log(2) * d.val_bytes)


# ---------------------------------------------------------------------------
# The end: the last validation, the summary, the samples.
def final_validation(cfg, model, d, progress):
    """(loss, bits per byte) on the validation data after the last step, (None, None)
    without it. The last update can break the model: a loss that is not finite (on the
    validation data, or else on a training batch) raises Stopped('diverged')."""
    try:
        val = evaluate(model, d)
        loss = models.evaluate(model, d.check) if val[0] is None else val[0]
    except (ArithmeticError, ValueError):  # scalar mode: math.exp overflow, log(0)
        loss = math.nan
    if not math.isfinite(loss):
        print(f"step {progress.step:4d} / {cfg['steps']:4d} | the model after this step gives NaN")
        raise stopping.Stopped('diverged')
    return val


def summary(cfg, status, progress, val, d, warmup_s, n_params, env):
    """The run's metrics (metrics.json), printed as the summary."""
    val_loss, val_bpb = val
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
        val_loss=val_loss, val_bpb=val_bpb, val_docs=val_size, val_history=progress.val_history,
        steps_per_s=steps / time_s if steps else None,
        tokens_per_s=progress.tokens / time_s if steps else None, tokens=progress.tokens,
        train_time_s=time_s, warmup_s=warmup_s, num_params=n_params,
        model_flops_per_token=flops, model_gflops_per_s=gflops, matmul_peak_gflops_per_s=peak,
        share_of_peak=gflops / peak if steps else None,
        peak_memory_mb=provenance.peak_memory_mb(), environment=env)
    print(f"--- summary: {status} after {steps} steps ---")
    if steps:
        print(f"final loss {metrics['final_loss']:.4f} | mean of the last {last_n} steps "
              f"{metrics['mean_loss_last_n']:.4f} | validation loss "
              f"{'n/a' if val_loss is None else f'{val_loss:.4f}, {val_bpb:.4f} bits per byte'} ({val_size} "
              f"{'windows' if cfg['data_format'] == 'text' else 'docs'})")
        print(f"{metrics['steps_per_s']:.1f} steps/s | {metrics['tokens_per_s']:.0f} tokens/s | "
              f"{output.format_time(time_s)} training" + (
                  f" | {warmup_s:.1f} s numba warm-up, not counted" if cfg['mode'] == 'tensor' else ''))
        print(f"model {flops / 1e6:.3g} MFLOP/token: {gflops:.3g} GFLOP/s, "
              f"{metrics['share_of_peak']:.1%} of the matmul peak at its shapes "
              f"({peak:.0f} GFLOP/s, measured now) | peak memory {metrics['peak_memory_mb']:.0f} MB")
    if status != 'diverged' and stuck(losses, val_loss, d.tok.vocab_size):
        odd = suspects(cfg)
        print(f"note: the loss stayed at ln {d.tok.vocab_size} = {math.log(d.tok.vocab_size):.4f}, "
              "a uniform guess's, at every step: the model learnt nothing; " + (
                  f"{odd} may keep its logits flat or its gradients at zero" if odd else
                  "its learning rate or its model settings may keep it there"))
    return metrics


STUCK = 1e-4  # how near ln V a loss is to count as a uniform guess: a run that learns
#               leaves it by more than this in its first update


def stuck(losses, val_loss, vocab_size):
    """Whether a run's loss stayed at ln V, a uniform guess's, at each of its steps (two
    at least: the first is the untrained model's) and on the validation data."""
    seen = losses + ([] if val_loss is None else [val_loss])
    return len(losses) > 1 and all(abs(x - math.log(vocab_size)) < STUCK for x in seen)


def suspects(cfg):
    """The model settings of a run that set its numbers' scales (--qk-scale, --softcap,
    --norm-eps, ...) at other values than the defaults and its recipe's, in words; '' if none."""
    recipe = settings.RECIPES.get(cfg['recipe'], {})
    return ', '.join(f"{settings.option(n)} {cfg[n]}" for n in settings.MODEL
                     if settings.SETTINGS[n].kind is float
                     and cfg[n] not in (settings.SETTINGS[n].default, recipe.get(n)))


def divergence_hint(cfg):
    """What to try after a run diverged: other values of its unusual model settings first,
    then a lower learning rate (Muon's own, under Muon) or initial weights (microgpt's)."""
    rates = ['--muon-lr' if cfg['optimizer'] == 'muon' else '--lr']
    if 'init_std' not in settings.idle(cfg):
        rates.append('--init-std')
    odd = suspects(cfg)
    return (f"try other values of {odd}, or " if odd else 'try ') + f"a lower {' or '.join(rates)}"


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
# The start: the header.
def print_header(cfg, d, n_params, out, resumed_after):
    text = cfg['data_format'] == 'text'
    print(f"num {'characters' if text else 'docs'}: {d.sizes}")
    print(f"vocab size: {d.tok.vocab_size}\nnum params: {n_params}")
    print(f"mode: {cfg['mode']}{' ' + cfg['dtype'] if cfg['mode'] == 'tensor' else ''}, "
          f"seed {cfg['seed']}, {cfg['threads']} thread(s), run record: {os.path.relpath(out)}"
          f"{f', resuming after step {resumed_after}' if resumed_after is not None else ''}")


def train_command(cfg, source=None, resume=False):
    """`cli.py train`: a new run as cfg says; or, from the record in `source`, a re-run of
    it (--from) or its continuation (--resume, resume=True). Returns the exit status."""
    with stopping.stop_signals() as caught:
        resumed = None
        if source:
            cfg, resumed = recorded_run(source, cfg['out'], resume)
        else:
            settings.check_acting(cfg)  # what the user set (a record may hold such values)
        contents = data.load(cfg['data'], cfg['data_format'], cfg['fetch'])  # before any folder
        tokens.check_data(cfg, contents)
        out, made = records.new_folder(cfg['out'], 'runs', f"{cfg['mode']}-seed{cfg['seed']}",
                                       provenance.now())
        with records.owned(out, made=made):
            metrics = run(cfg, out, contents, resumed, should_stop=lambda: bool(caught))
    if metrics['status'] == 'diverged':
        print(f"error: training diverged at step {metrics['steps']}; {divergence_hint(cfg)}. "
              f"The record up to that step is in {os.path.relpath(out)}", file=sys.stderr)
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
    Progress so far. Else the state is None. To continue it, every setting in its
    config.json must be what its checkpoint recorded (a checkpoint from before it recorded
    them: its model's settings)."""
    path = os.path.join(src, 'config.json')
    rec = records.read_json(path, 'a run record')
    if resume:  # the status, then the checkpoint: what the settings are checked against
        mpath = os.path.join(src, 'metrics.json')
        metrics = records.read_json(mpath, 'a run record')
        status = records.field(metrics, 'status', mpath, str, lambda s: s in STATUSES,
                               f"one of {', '.join(STATUSES)}")
        if status not in RESUMABLE:
            raise UserError(f"the run in {src} is {status}: only a stopped or interrupted run "
                            "can be resumed")
        cpath = os.path.join(src, 'checkpoint.json')
        ckpt = checkpoint.load(cpath, need_adam=True, need_rng=True)
    model = lambda config: {k: v for k, v in config.items() if k != 'vocab_size'}  # the model's
    #                                         vocabulary, not the --vocab-size that BPE was asked for
    cfg = settings.read(rec, f"{path}:", RECORD_FIELDS,
                        against=(ckpt['settings'] or model(ckpt['config']), cpath) if resume else None)
    sha = records.field(rec, 'data_sha256', path, str,
                        lambda s: re.fullmatch('[0-9a-f]{64}', s), 'a sha256')
    cfg.update(data=settings.recorded_data(cfg['data'], sha, src), out=out)
    if not resume:
        return dict(cfg, rerun_of=os.path.abspath(src)), None
    if ckpt['step'] > cfg['steps'] or ckpt['adam']['t'] != ckpt['step']:
        raise UserError(f"{cpath}: step {ckpt['step']} (Adam's {ckpt['adam']['t']}) does not fit "
                        f"a run of {cfg['steps']} steps")
    uneven = cfg['optimizer'] == 'muon' and models.uneven_muon_v(ckpt)
    if uneven:
        raise UserError(f"{cpath}: Muon's v of {uneven} is not one value a row (or column), "
                        "as Muon keeps it: not a state that training left")
    val_history = records.field(
        metrics, 'val_history', mpath, list, lambda h: all(
            isinstance(e, list) and len(e) in (2, 3, 4) and type(e[0]) is int
            and 0 < e[0] <= ckpt['step'] and all(type(x) in (int, float) for x in e[1:])
            for e in h), 'a list of [step, validation loss, training time, bits per byte] up to the checkpoint')
    number = lambda x: not isinstance(x, bool) and x >= 0 and math.isfinite(x)
    progress = Progress(
        records.read_losses(os.path.join(src, 'losses.csv'), ckpt['step']),
        [tuple(e) for e in val_history],
        records.field(metrics, 'train_time_s', mpath, (int, float), number, 'a time in seconds'),
        records.field(metrics, 'tokens', mpath, int, number, 'a token count'))
    env = metrics.get('environment')  # what ran the steps so far (records before it: none)
    state = dict(checkpoint=ckpt, progress=progress, environment=env if isinstance(env, dict) else None)
    return dict(cfg, stop_after=None, resumed_from=os.path.abspath(src)), state
