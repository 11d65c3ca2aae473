"""
ablation.py: settings of the model or its training varied one way or another, trained
alike, and what their differences say.

A grid crosses axes: each a setting (or settings varied together, a recipe) with its values.
Its first, by default, is the variants: lm_head untied or tied to wte, crossed with the
rmsnorm of the input embedding on or off; the first variant, untied with the rmsnorm, is the
reference's model. The cells of a grid are every combination of the axes' values, or each
value alone against the reference cell (--design alone); every cell is trained with every
seed, each an ordinary training run (training.py) with its record under runs/, in parallel:
worker processes here, or a Dask cluster's workers (cluster.py). The summary pairs each
cell's validation loss with the reference cell's of the same seed, and gives the mean
difference with its 95% confidence interval (Student's t); then a table, a CSV, JSON and a
plot of the loss curves.

Read top to bottom: the statistics, the grid (its cells and their names), running it (and
resuming), the summary.
"""
import concurrent.futures
import contextlib
import hashlib
import itertools
import math
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing import resource_tracker
from typing import NamedTuple

import data
from microgpt_lab import (UserError, cluster, output, plots, provenance, records, settings,
                          stopping, training)

# ---------------------------------------------------------------------------
# Statistics
def t_quantile_975(df):
    """The 97.5% quantile of Student's t with df degrees of freedom: the t of a two-sided
    95% interval. Found by bisection on the closed form of P(|T| <= t) for whole df
    (Abramowitz and Stegun 26.7.3 and 26.7.4)."""
    def two_sided(t):  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        c2, s = math.cos(theta) ** 2, math.sin(theta)
        if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
            term, total = math.cos(theta), 0.0
            for k in range(1, (df - 1) // 2 + 1):
                total += term
                term *= c2 * 2 * k / (2 * k + 1)
            return 2 / math.pi * (theta + s * total)
        term, total = 1.0, 0.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for k in range(1, df // 2 + 1):
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        return s * total

    low, high = 0.0, 1000.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if two_sided(mid) < 0.95 else (low, mid)
    return (low + high) / 2


def paired_interval(diffs):
    """Mean of paired differences with its 95% interval: mean ± t(n-1) · s / sqrt(n), s the
    sample standard deviation. None for fewer than two pairs."""
    n = len(diffs)
    if n < 2:
        return None
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return dict(mean=mean, low=mean - half, high=mean + half, n=n)


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


# ---------------------------------------------------------------------------
# The grid: its axes, each a setting (or settings varied together) with its values; its
# cells, each a value of every axis; the first cell, the first value of each axis, is the
# reference. The default axis is the variants, whose values go by their names.
VARIANT_AXIS = 'tie_lm_head+input_rmsnorm'
VARIANT_NAMES = {(False, True): 'untied-norm', (True, True): 'tied-norm',  # the first: the reference's
                 (False, False): 'untied-nonorm', (True, False): 'tied-nonorm'}
NOT_VARIED = {name: s.fixed for name, s in settings.SETTINGS.items() if s.fixed}  # and why
NOT_VARIED['out'] = 'one ablation, one folder'
DESIGNS = settings.COMMAND_OPTIONS['design'].kind  # ('product', 'alone', 'path')


def axes_of(variants, vary, name_of=settings.option):
    """A grid's axes: the variants named (all four if None) then each --vary axis; or the
    --vary axes alone, when they vary lm_head or the input rmsnorm themselves."""
    own = {n for name, _ in vary for n in name.split('+')} & {*VARIANT_AXIS.split('+'), 'recipe'}
    if own and variants is None:
        return list(vary)
    by_name = {name: value for value, name in VARIANT_NAMES.items()}
    names = list(by_name) if variants is None else variants
    unknown = [v for v in names if v not in by_name]
    if unknown:
        raise UserError(f"{name_of('variants')}: {unknown[0]} is not a variant ({', '.join(by_name)})")
    if not names or len(set(names)) != len(names):
        raise UserError(f"{name_of('variants')}: give each variant at most once, at least one")
    return [(VARIANT_AXIS, [by_name[v] for v in names])] + list(vary)


def axis(spec):
    """The axis of a --vary NAME=V1,V2,...: (setting, [values]), the setting named as its
    train option (less the --; the flags' settings as tie-lm-head, input-rmsnorm), its values
    converted and checked by the settings table. Of NAME+NAME=V+V,V+V,... (settings varied
    together): ('name+name', [(value, value), ...])."""
    names, _, values = spec.partition('=')
    if '+' in names:  # settings varied together: each value a V+V, one part a setting
        rows = [v.split('+') for v in values.split(',')] if values else []
        if not rows or any(len(r) != names.count('+') + 1 for r in rows):
            raise UserError(f"--vary {spec}: give NAME+NAME=V+V,... with a value for each NAME")
        columns = [axis(f"{name}={','.join(r[i] for r in rows)}")
                   for i, name in enumerate(names.split('+'))]
        return '+'.join(c[0] for c in columns), list(zip(*(c[1] for c in columns)))
    opt = '--' + names.lstrip('-')
    setting = opt[2:].replace('-', '_')
    if setting not in settings.SETTINGS or not settings.option(setting):
        raise UserError(f"--vary {spec}: {opt[2:]} is not a setting of train")
    if not values:
        raise UserError(f"--vary {spec}: give NAME=V1,V2,...")
    return setting, [settings.convert(setting, v, f"--vary {opt}") for v in values.split(',')]


def modes(axes):
    """The modes that a grid's axes set (none: the base setting's)."""
    return {v for name, values in axes for value in values for n, v in pairs(name, value)
            if n == 'mode'}


def cells(axes, design='product'):
    """The grid's cells, each ((axis, value), ...) with a value of every axis, the reference
    cell first. design 'product': every combination of the axes' values, the first axis's
    side by side (the variants, by default), the others nested in their order. 'alone':
    the reference cell, then one cell for each other value of each axis, the rest as the
    reference: each choice alone against the reference, which all of them share. 'path':
    the reference cell, then one change at a time, each cell keeping the changes before it:
    the axes in their order, each through its values (a staircase from the first cell to the
    last)."""
    first = tuple((name, values[0]) for name, values in axes)
    if design == 'alone':
        return [first] + [first[:i] + ((name, value),) + first[i + 1:]
                          for i, (name, values) in enumerate(axes) for value in values[1:]]
    if design == 'path':
        path = [first]
        for i, (name, values) in enumerate(axes):
            path += [path[-1][:i] + ((name, value),) + path[-1][i + 1:] for value in values[1:]]
        return path
    inner, *outer = [[(name, value) for value in values] for name, values in axes]
    return [(combo[-1], *combo[:-1]) for combo in itertools.product(*outer, inner)]


def pairs(name, value):
    """The (setting, value) pairs of one axis's value: an axis of settings varied together
    ('norm+activation', a recipe) has a value for each."""
    return list(zip(name.split('+'), value)) if '+' in name else [(name, value)]


def shown(name, value):
    """A varied setting's value as its option takes it: a switch's on or off; the values of
    settings varied together joined by +."""
    if '+' in name:
        return '+'.join(str(shown(n, v)) for n, v in pairs(name, value))
    return ('on' if value else 'off') if settings.SETTINGS[name].kind is bool else value


def said(name, value):
    """A setting's value in words, as one would type it: a switch's on or off, auto for
    a setting left to its rule (None), 15 for 15.0. (shown keeps the run folders' form.)"""
    if settings.SETTINGS[name].kind is bool:
        return 'on' if value else 'off'
    if value is None:
        return 'auto'
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith('.0') else text
    return str(value)


def worded(name, value):
    """One axis's value in words: a variant's name, or NAME=VALUE; settings varied
    together each so, joined by commas ('optimizer=muon, muon-lr=0.01')."""
    if name == VARIANT_AXIS:
        return VARIANT_NAMES[tuple(value)]
    return ', '.join(f"{n.replace('_', '-')}={said(n, v)}" for n, v in pairs(name, value))


def described(cell):
    """A whole cell in words: 'untied-norm, optimizer=adamw, lr=0.0005, muon-lr=0.02'."""
    return ', '.join(worded(name, value) for name, value in cell)


def parts(cell):
    """What names a cell, a part for each axis: a variant's name, or NAME=VALUE
    (['untied-norm', 'lr=0.01']). The table, the run folders, the plots and the summary
    all name a cell by these."""
    return [VARIANT_NAMES[tuple(value)] if name == VARIANT_AXIS else
            f"{name.replace('_', '-')}={shown(name, value)}" for name, value in cell]


def label(cell):
    """A cell's name, as the table, the summary and the plots show it: 'untied-norm lr=0.01'."""
    return ' '.join(parts(cell))


MAX_NAME = 120  # characters of a run's folder name before its seed


def run_name(cell, seed):
    """The folder of a cell's run with a seed: its parts, safe for a file system."""
    name = '-'.join(re.sub(r'[^A-Za-z0-9.+=-]', '_', part) for part in parts(cell))
    if len(name) > MAX_NAME:  # a file name holds 255 bytes: keep a readable start, made unique
        name = f"{name[:MAX_NAME - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return f"{name}-seed{seed}"


def variant_of(cfg):
    """The variant of a run's settings: its lm_head and input rmsnorm, by name."""
    return VARIANT_NAMES[(cfg['tie_lm_head'], cfg['input_rmsnorm'])]


def cell_config(base, cell, seed):
    """A cell's run with a seed: the base settings, with the cell's values; a recipe that
    the cell varies sets its settings, bar those its other axes vary or the command gave."""
    varied = {n: v for name, value in cell for n, v in pairs(name, value)}
    cfg = dict({name: base[name] for name in settings.SETTINGS}, **varied, seed=seed)
    return settings.with_recipe(cfg, {*varied, *base.get('given', ())}) if 'recipe' in varied else cfg


def check_grid(base, axes, name_of, design='product'):
    """A UserError for the first thing in a grid that cannot run: a setting that is not
    varied, or a cell whose settings do not fit together."""
    for joint, values in axes:
        names = joint.split('+')  # settings varied together: a value for each, joined by +
        if len(names) > 1 and any(not isinstance(v, (list, tuple)) or len(v) != len(names)
                                  for v in values):
            raise UserError(f"{name_of('vary')} {joint.replace('_', '-')}: give a value for "
                            "each setting, joined by +")
        if not values or len(set(map(str, values))) != len(values):
            raise UserError(f"{name_of('vary')} {joint.replace('_', '-')}: give distinct values")
        for i, name in enumerate(names):
            column = [pairs(joint, v)[i][1] for v in values]
            if name == 'threads' and None in column:
                raise UserError(f"{name_of('vary')} threads=auto: an ablation's runs each run a "
                                "given number of threads, so that --jobs changes nothing")
            if name in NOT_VARIED or name not in settings.SETTINGS:
                why = NOT_VARIED.get(name, 'it is not a setting of a run')
                raise UserError(f"{name_of('vary')} {name.replace('_', '-')}: not varied: {why}")
            for value in column:
                why = settings.problem(settings.SETTINGS[name], value)
                if why:
                    raise UserError(f"{name_of('vary')} {name.replace('_', '-')}={value}: {why}")
    varied = [n for joint, _ in axes for n in joint.split('+')]
    if len(set(varied)) != len(varied):
        raise UserError(f"{name_of('vary')}: each setting once")
    if design not in DESIGNS:
        raise UserError(f"{name_of('design')} must be {' or '.join(DESIGNS)}, got {design!r}")
    for cell in cells(axes, design):
        settings.check(cell_config(base, cell, base['seed']), name_of)
    muon = [cell_config(base, cell, 0) for cell in cells(axes, design)]
    muon = [{k: v for k, v in cfg.items() if k != 'lr'} for cfg in muon if cfg['optimizer'] == 'muon']
    if len(muon) != len({repr(sorted(cfg.items())) for cfg in muon}):  # cells only --lr tells apart
        raise UserError(f"{name_of('vary')} lr: with --optimizer muon, --lr is only the schedule's peak: "
                        "vary muon-lr (and the optimizer's groups follow the schedule)")
    scored = {training.val_docs_of(cell_config(base, cell, base['seed'])) for cell in cells(axes, design)}
    if len(scored) > 1 and base['data_format'] == 'lines':
        raise UserError(f"{name_of('vary')} mode: its cells would be scored on different "
                        "validation sets (tensor mode: every held-out document; scalar mode: "
                        f"200 of them), which cannot be compared: give {name_of('val_docs')} N")


# ---------------------------------------------------------------------------
# Running. Every run is a task, handed to workers through an executor in the style of
# concurrent.futures: this process itself (--jobs 1), a pool of worker processes (--jobs N),
# or the workers of a Dask cluster (--cluster, see cluster.py). A task carries what its run
# needs: the settings, the data's bytes (checked by sha256), a stopped run's state. A
# worker on this machine writes the run's record in place as it goes (its train.log can be
# followed); a worker elsewhere, which may share no disk with this one, trains in a
# temporary folder and returns the record's files, which this process writes under runs/.
provenance.code_version()  # now, as this code is loaded (see there)
THREAD_VARS = ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMBA_NUM_THREADS')
STOP_FILE = '.stop'  # written when the ablation is interrupted: holds the signal's number


class Task(NamedTuple):
    cfg: dict          # the run's settings; out: its folder on this machine, absolute
    data_sha256: str   # of the data's bytes, which the worker gets beside the task
    state: dict        # a stopped run's checkpoint and progress, to continue it; or None
    in_place: bool     # the worker writes the record in cfg['out'] (it is on this machine)
    code: str          # the version of the ablation's code (provenance.code_version)


class Result(NamedTuple):
    metrics: dict      # None: not run (the ablation stopped first, or the code differs)
    files: dict        # the record, {name: bytes}, from a worker elsewhere; else None
    code: str          # the version of the worker's code
    worker: str        # who ran it, for messages


def run_task(task, raw, stop):
    """Run one (cell, seed) run where this is called, on the data's bytes raw; its Result.
    A signal, or the stop flag, stops it after its step; a signal that reaches it first
    sets the flag, so that the runs not yet begun skip."""
    worker, code = cluster.worker_name(), provenance.code_version()
    if task.code != code or stop.is_set():
        return Result(None, None, code, worker)
    if data.sha256(raw) != task.data_sha256:
        raise UserError(f"the data {worker} received is not the ablation's (sha256 "
                        f"{data.sha256(raw)[:12]}..., not {task.data_sha256[:12]}...)")
    cfg, resume = task.cfg, task.state is not None
    contents = data.parse(raw, cfg['data_format'], cfg['data'])
    folder = cfg['out'] if task.in_place else tempfile.mkdtemp(prefix='microgpt-lab-run-')
    own_signals = threading.current_thread() is threading.main_thread()  # not a Dask thread
    try:
        os.makedirs(folder, exist_ok=True)
        with records.owned(folder, must_be_empty=not (resume and task.in_place)), \
                stopping.stop_signals() if own_signals else contextlib.nullcontext([]) as caught, \
                open(os.path.join(folder, 'train.log'), 'a' if resume and task.in_place else 'w',
                     encoding='utf-8', errors='replace') as log, \
                contextlib.redirect_stdout(output.QuietPipe(log)) as pipe:
            metrics = training.run(cfg, cfg['out'], contents, task.state,
                                   should_stop=lambda: bool(caught) or stop.is_set(),
                                   write_to=folder, data_sha256=task.data_sha256)
        if caught and not stop.is_set():
            stop.set(caught[0])
        if pipe.error:
            print(f"warning: {folder}/train.log could not be written to its end "
                  f"({pipe.error}); the run's record is whole", file=sys.stderr)
        files = None if task.in_place else {name: open(os.path.join(folder, name), 'rb').read()
                                            for name in os.listdir(folder) if name[0] != '.'}
    finally:
        if not task.in_place:
            shutil.rmtree(folder, ignore_errors=True)
    return Result(metrics, files, code, worker)


def keep(run_dir, files, resumed):
    """Write the record a worker elsewhere returned into run_dir, as a run writes its own
    (metrics.json last); a continued run's train.log goes on from the stopped one's."""
    os.makedirs(run_dir, exist_ok=True)
    log = os.path.join(run_dir, 'train.log')
    if resumed and 'train.log' in files and os.path.exists(log):
        with open(log, 'rb') as f:
            files = dict(files, **{'train.log': f.read() + files['train.log']})
    records.write_record(run_dir, {name: files[name] for name in sorted(
        files, key=lambda name: name == 'metrics.json')})


class Here(concurrent.futures.Executor):
    """The executor of --jobs 1: a task runs in this process as it is handed over."""
    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:
            future.set_exception(e)
        return future


class Local:
    """The workers of --jobs N on this machine: this process (1), or a pool of N worker
    processes, each of which starts with the runs' thread count for its BLAS (a run sets
    it again, as every run does), so that the results do not depend on N."""
    in_place = True

    def __init__(self, jobs, threads, out, caught):
        self.jobs, self.threads = jobs, threads
        self.stop = stopping.StopFile(os.path.join(out, STOP_FILE), caught)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.stop.path)  # a stopped ablation's, which goes on now

    def __enter__(self):
        if self.jobs == 1:
            self.executor = Here()
            return self
        self.saved = {var: os.environ.get(var) for var in THREAD_VARS}
        os.environ.update(dict.fromkeys(THREAD_VARS, str(self.threads)))  # for the workers
        with stopping.signals_held():
            resource_tracker.ensure_running()  # multiprocessing's, which would die of SIGHUP
        self.executor = concurrent.futures.ProcessPoolExecutor(
            self.jobs, mp_context=multiprocessing.get_context('spawn'),
            initializer=stopping.worker_init, initargs=(os.getpid(),))
        return self

    def __exit__(self, *exc):
        self.executor.shutdown(cancel_futures=True)
        for var, value in getattr(self, 'saved', {}).items():
            os.environ.pop(var) if value is None else os.environ.update({var: value})

    def submit(self, fn, *args):
        with stopping.signals_held():  # a worker process may start now, and inherits it
            return self.executor.submit(fn, *args)

    def capacity(self):
        return self.jobs

    def share(self, raw):
        return raw  # a copy goes with each task

    def lost(self):
        return None  # this machine is always there

    def where(self, todo):
        return f"{min(self.jobs, max(1, todo))} at a time"

    def failure(self, e, run_dir):
        if isinstance(e, concurrent.futures.process.BrokenProcessPool):
            return (f"a worker process died (killed, or out of memory?) while it ran "
                    f"{os.path.relpath(run_dir)}")
        return None


def kernel_note(run_dirs, to_go):
    """A note if runs recorded in run_dirs ran on another BLAS kernel than this process has:
    results differ in their last bits between kernels, so the to_go tensor-mode runs made
    here would not re-run bit for bit where those do. None if all is one kernel, or no
    tensor-mode run is to go."""
    now, before, others = provenance.kernels_of(None), set(), 0
    for run_dir in run_dirs:
        env = records.read_json(os.path.join(run_dir, 'metrics.json'), 'a run record').get('environment')
        if isinstance(env, dict) and env.get('mode') == 'tensor':  # (scalar mode: no BLAS)
            kernels = provenance.kernels_of(env)
            before |= kernels
            others += bool(kernels - now)
    if not to_go or not before - now:
        return None
    pins = [v for v in provenance.KERNEL_PINS if v in os.environ]
    how = (f"{', '.join(f'{v}={os.environ[v]}' for v in pins)} pins it here; env -u {' -u '.join(pins)} "
           "lets BLAS choose this CPU's own" if pins else
           f"OPENBLAS_CORETYPE={sorted(before - now)[0]} would take theirs, where the CPU has it")
    return (f"note: {counted(others, 'run')} of this ablation ran on the BLAS kernel "
            f"{'/'.join(sorted(before - now))}, and the {counted(to_go, 'run')} to go will run on "
            f"{'/'.join(sorted(now)) or 'an unknown one'}: results differ in their last bits "
            f"between kernels ({how})")


def counted(n, thing):
    """'1 run', '3 runs'."""
    return f"{n} {thing}{'' if n == 1 else 's'}"


def state_of(run_dir, cfg):
    """What a run's folder holds: 'done' (completed, or diverged: it would diverge again),
    'resume' (stopped or interrupted, with its checkpoint, by the plan's settings cfg),
    or 'new' (nothing, or nothing it can go on from: it starts over, with a note saying
    why). A finished run by other settings than the plan's is an error: its figures
    would stand in the summary for a cell they do not belong to."""
    if not os.path.exists(os.path.join(run_dir, 'metrics.json')):
        return 'new'  # not begun, or killed before it wrote its record
    try:
        status = records.read_run(run_dir)['status']
        recorded, _ = training.recorded_run(run_dir, run_dir,
                                            resume=status in training.RESUMABLE)
    except UserError as e:
        print(f"note: {os.path.relpath(run_dir)} cannot be used ({e}): it starts over",
              file=sys.stderr)
        return 'new'
    # (a plan from before the thread count was a setting lets its runs take the cores)
    different = [k for k in settings.SETTINGS if k not in ('stop_after', 'data')
                 and recorded[k] != cfg[k] and not (k == 'threads' and cfg[k] is None)]
    if not different:
        return 'resume' if status in training.RESUMABLE else 'done'
    k = different[0]
    if status not in training.RESUMABLE:
        raise UserError(f"{run_dir}/config.json: {k} is {recorded[k]!r}, but the ablation's "
                        f"plan says {cfg[k]!r} for this run: remove the run to train it again")
    print(f"note: {os.path.relpath(run_dir)} ran with {k} {recorded[k]!r}, the plan says "
          f"{cfg[k]!r}: it starts over", file=sys.stderr)
    return 'new'


def execute(workers, todo, raw, caught, report):
    """Hand the runs todo [(settings, label, seed, whether it continues)] to the workers,
    never more at once than they take, so that none waits in a queue when the ablation
    stops; keep and report each one's record as it comes. Once a signal is caught or
    something fails, the runs under way stop after their step and return their records,
    and the rest are not handed over. Returns the first failure, a phrase, or None."""
    queue, pending, failure = list(todo), {}, None
    sha, code, shared = data.sha256(raw), provenance.code_version(), workers.share(raw)

    def room():  # how many runs the workers take now; none once they cannot be used
        nonlocal failure
        try:
            return workers.capacity()
        except UserError as e:  # a worker joined that cannot run them
            failure = failure or str(e)
            return 0
    while queue or pending:
        if caught or failure or workers.stop.is_set():
            queue = []  # the runs not begun stay so, for --resume
        while queue and len(pending) < room():
            cfg, variant, seed, resume = queue.pop(0)
            state = training.recorded_run(cfg['out'], cfg['out'], resume=True)[1] if resume else None
            task = Task(cfg, sha, state, workers.in_place, code)  # its state read only now
            pending[workers.submit(run_task, task, shared, workers.stop)] = task, variant, seed
        done, _ = concurrent.futures.wait(pending, timeout=0.2,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            task, variant, seed = pending.pop(future)
            try:
                result = future.result()
                if result.code != task.code:
                    raise UserError(f"{result.worker} runs other code (version {result.code}) "
                                    f"than this ablation ({task.code}): install the same "
                                    "version there, or stop that worker")
                if result.files:
                    keep(task.cfg['out'], result.files, task.state is not None)
            except concurrent.futures.CancelledError:  # by the cluster, not by us
                failure = failure or workers.lost() or f"{os.path.relpath(task.cfg['out'])} was cancelled"
                continue
            except Exception as e:
                failure = failure or workers.failure(e, task.cfg['out']) or (
                    str(e) if isinstance(e, (UserError, data.DataError)) else
                    f"{os.path.relpath(task.cfg['out'])} failed: {type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
                continue
            if result.metrics is not None:  # else it skipped: the ablation stopped first
                report(variant, seed, result.metrics)
        if caught or failure:
            workers.stop.set(caught[0] if caught else signal.SIGTERM)  # once
    return failure


PLAN_FIELDS = ('seeds', 'jobs', 'out', 'design', 'given')  # in the plan's config beside the settings


def read_plan(out, with_data=True):
    """The plan of the ablation in out (ablation.json), checked: (settings, seeds, axes). A
    plan from before grids has all four variants and no other axes. with_data: its data
    must be there still, with the same bytes (to train)."""
    path = os.path.join(out, 'ablation.json')
    plan = records.read_json(path, 'an ablation')
    recorded = records.field(plan, 'config', path, dict)
    seeds = records.field(plan, 'seeds', path, list, lambda s: s and all(
        type(x) is int and x >= 0 for x in s) and len(set(s)) == len(s), 'a list of seeds')
    cfg = dict(settings.read(recorded, f"{path}: config", PLAN_FIELDS),
               jobs=records.field(recorded, 'jobs', path, (int, type(None)), lambda j: not
                                  settings.problem(settings.COMMAND_OPTIONS['jobs'], j),
                                  'a count up to 1024'),
               design=recorded.get('design', 'product'),  # plans before designs: the product
               given=records.field(dict(dict(given=[]), **recorded), 'given', path, list, lambda g: all(
                   isinstance(n, str) and n in settings.SETTINGS for n in g), 'a list of settings'))
    variants = records.field(dict(dict(variants=None), **plan), 'variants', path,
                             (list, dict, type(None)))  # None: its --vary varies them
    vary = records.field(dict(dict(vary=[]), **plan), 'vary', path, list, lambda a: all(
        isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], list)
        for x in a), 'a list of [setting, values]')
    vary = [(name, [tuple(v) if '+' in name and isinstance(v, list) else v for v in values])
            for name, values in vary]  # values of settings varied together: tuples
    name_of = lambda name: f"{path}: {name}"
    axes = axes_of(None if variants is None else list(variants), vary, name_of)
    check_grid(cfg, axes, name_of, cfg['design'])
    sha = records.field(plan, 'data_sha256', path, str)
    if with_data:
        cfg['data'] = settings.recorded_data(cfg['data'], sha, out)
    return cfg, seeds, axes


def ablate_command(cfg, resume=None, address=None):
    """`cli.py ablate`: train every cell of the grid with every seed, then summarize; or
    finish the ablation in the folder `resume`, skipping its finished runs. Its runs go to
    the Dask scheduler at `address`, if given; else to --jobs processes here. Returns the
    exit status."""
    if address and cfg.get('jobs'):
        raise UserError("--jobs and --cluster: give one (a cluster runs a run on each worker)")
    with stopping.stop_signals() as caught:
        if resume:
            plan = read_plan(resume)
            with records.owned(resume, must_be_empty=False), \
                    cluster.connect(address) if address else contextlib.nullcontext() as remote:
                return run_all(*plan, resume, cfg['jobs'] or plan[0]['jobs'], caught, remote)
        cfg = dict(cfg, threads=cfg['threads'] or 1)  # a run's threads do not follow --jobs
        axes = axes_of(cfg['variants'], cfg['vary'])
        check_grid(cfg, axes, settings.option, cfg['design'])
        grid = cells(axes, cfg['design'])
        contents = data.load(cfg['data'], cfg['data_format'], cfg['fetch'])  # now, not in a worker
        at_once = 1 if address else min(cfg['jobs'] or os.cpu_count() or 1, len(grid) * cfg['seeds'])
        for cell in grid:
            training.check_data(cell_config(cfg, cell, cfg['seed']), contents, needed_by='ablate',
                                at_once=at_once)
        seeds = [cfg['seed'] + i for i in range(cfg['seeds'])]
        with cluster.connect(address) if address else contextlib.nullcontext() as remote:
            out, made = records.new_folder(cfg['out'], 'ablations', cfg['mode'], provenance.now())
            with records.owned(out, made=made):
                config = {k: v for k, v in cfg.items() if k not in ('variants', 'vary')}
                variants = [VARIANT_NAMES[v] for v in axes[0][1]] \
                    if len(axes) > len(cfg['vary']) else None  # the axis --vary did not give
                records.write_json(os.path.join(out, 'ablation.json'), dict(
                    config=dict(config, data=os.path.abspath(cfg['data'])), seeds=seeds,
                    data_sha256=data.sha256_of(cfg['data']), variants=variants,
                    vary=cfg['vary']))
                plan = read_plan(out)
                return run_all(*plan, out, plan[0]['jobs'], caught, remote)


def run_all(base, seeds, axes, out, jobs, caught, remote=None):
    """Run the plan's runs that are not done (on the cluster `remote`, else with `jobs`
    processes here), then summarize them all."""
    grid = cells(axes, base['design'])
    # an ablation recorded before the thread count was a setting: its runs take the cores
    threads = max(cell_config(base, cell, seeds[0])['threads'] or os.cpu_count() or 1
                  for cell in grid)
    jobs = jobs or max(1, (os.cpu_count() or 1) // threads)
    runs, todo, resumed = [], [], 0
    called = dict(zip(grid, names(grid, base['design']) if base['design'] != 'product' else map(described, grid)))
    for seed in seeds:
        for cell in grid:
            run_dir = os.path.abspath(os.path.join(out, 'runs', run_name(cell, seed)))
            runs.append((cell, seed, run_dir))
            run_cfg = dict(cell_config(base, cell, seed), out=run_dir, stop_after=None)
            state = state_of(run_dir, run_cfg)
            if state == 'new':
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing to go on from: start over
            if state != 'done':
                todo.append((run_cfg, called[cell], seed, state == 'resume'))
                resumed += state == 'resume'
    if remote is None:  # (a cluster's workers have their own kernels, in each run's record)
        note = kernel_note([d for _, _, d in runs if os.path.exists(os.path.join(d, 'metrics.json'))],
                           sum(cfg['mode'] == 'tensor' for cfg, *_ in todo))
        if note:
            print(note, file=sys.stderr)
    raw = data.read_bytes(base['data'])  # what every run trains on, sent with its task
    steps = sorted({cell_config(base, cell, 0)['steps'] for cell in grid})
    grid_size = ' x '.join(f"{len(v)} {'variants' if n == VARIANT_AXIS else n.replace('_', '-')}"
                           for n, v in axes)
    if base['design'] == 'alone':
        grid_size = f"the reference and {counted(len(grid) - 1, 'cell')} of one change each"
    elif base['design'] == 'path':
        grid_size = f"the reference and a path of {counted(len(grid) - 1, 'change')}"
    workers = remote or Local(jobs, threads, out, caught)
    print(f"ablation: {grid_size} x {counted(len(seeds), 'seed')}, {'/'.join(map(str, steps))} steps, "
          f"{base['mode']} mode, {threads} thread(s) a run; {len(runs) - len(todo)} runs done, "
          f"{len(todo)} to go{f' ({resumed} continued from their checkpoints)' if resumed else ''}"
          f", {workers.where(len(todo))}; record: {os.path.relpath(out)}", flush=True)
    finished, start = 0, time.perf_counter()

    def report(variant, seed, m):
        nonlocal finished
        finished += 1
        left = len(todo) - finished
        eta = (time.perf_counter() - start) / finished * left
        num = lambda x, fmt: 'n/a' if x is None else format(x, fmt)
        print(f"[{finished:2d}/{len(todo)}] {variant} seed {seed}: {m['status']}, final loss "
              f"{num(m['final_loss'], '.4f')}, val loss {num(m['val_loss'], '.4f')}, "
              f"{num(m['tokens_per_s'], '.0f')} tok/s; {left} to go"
              f"{f', about {training.format_time(eta)} left' if left else ''}", flush=True)

    with workers if remote is None else contextlib.nullcontext():
        failure = execute(workers, todo, raw, caught, report)
    to_go = f"{output.program()} ablate --resume {os.path.relpath(out)}" + (
        f" --cluster {remote.address}" if remote else '')
    if failure and not caught:
        print(f"error: {failure}; the finished runs are kept, and the stopped ones continue "
              f"from their checkpoints with: {to_go}", file=sys.stderr)
        return 1
    if caught or workers.stop.is_set():
        signum = caught[0] if caught else workers.stop.signum() or signal.SIGINT
        print(f"interrupted: the finished runs are kept, the stopped ones continue from their "
              f"checkpoints; to go on: {to_go}")
        return 128 + signum
    diverged = summarize(out, base, runs, seeds, axes)
    if diverged:
        print(f"error: {diverged} of {len(runs)} runs diverged, and the summary leaves them "
              "out; try a lower --lr (--muon-lr) or --init-std", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------
# The summary: summary.csv (a row a run), summary.json, table.md, losses.png, intervals.png.
def run_row(base, cell, seed, run_dir, out):
    """The figures of one finished run, a row of summary.csv: its cell (variant and the
    values of the other varied settings), seed and results."""
    cfg, m = cell_config(base, cell, seed), records.read_run(run_dir)
    s = m['samples']
    return {'variant': variant_of(cfg), **{name: shown(name, value) if '+' in name else value
                                        for name, value in cell if name != VARIANT_AXIS}, **dict(
        seed=seed, tie_lm_head=cfg['tie_lm_head'], input_rmsnorm=cfg['input_rmsnorm'],
        status=m['status'], final_loss=m['final_loss'], mean_loss_last_n=m['mean_loss_last_n'],
        last_n=m['last_n'], val_loss=m['val_loss'], steps_per_s=m['steps_per_s'],
        tokens_per_s=m['tokens_per_s'], samples_train=s.get('train'), samples_val=s.get('val'),
        samples_new=s.get('new'), run=os.path.relpath(run_dir, out))}


DESIGN_WORDS = dict(product="every combination of the variants and the --vary values",
                    alone="each choice alone against the reference (one change a cell)",
                    path="a path from the reference, one change a step, each cell keeping the changes above it")


def summarize(out, base, runs, seeds, axes):
    """summary.csv (a row a run), summary.json and table.md (a row a cell: means over
    seeds, and the paired difference of validation loss from the reference cell; on a
    path, from the cell before it too), the plot. Returns how many runs diverged."""
    rows = [run_row(base, cell, seed, run_dir, out) for cell, seed, run_dir in runs]
    varied = [name for name, _ in axes if name != VARIANT_AXIS]  # the variants have columns
    records.write_atomic(os.path.join(out, 'summary.csv'),
                         records.csv_text(list(rows[0]), (r.values() for r in rows)))
    grid = list(dict.fromkeys(cell for cell, _, _ in runs))
    reference = grid[0]
    done = lambda row: row['status'] == 'completed'  # a diverged run's figures are left out
    val = {cell: {seed: row['val_loss'] for (c, seed, _), row in zip(runs, rows)
                  if c == cell and done(row) and row['val_loss'] is not None} for cell in grid}
    def delta(cell, against):  # the paired difference of validation loss, seed by seed
        return paired_interval([v - val[against][seed] for seed, v in val[cell].items() if seed in val[against]])
    table = []
    for i, cell in enumerate(grid):
        rs = [row for (c, _, _), row in zip(runs, rows) if c == cell]
        ok = [r for r in rs if done(r)]
        stats = {k: mean_sd([r[k] for r in ok]) for k in (
            'final_loss', 'mean_loss_last_n', 'val_loss', 'steps_per_s', 'tokens_per_s',
            'samples_train', 'samples_val', 'samples_new')}
        table.append({'cell': label(cell), 'variant': variant_of(cell_config(base, cell, 0)),
                      **{name: value for name, value in cell if name in varied}, 'seeds': len(rs),
                      **stats, 'last_n': (ok or rs)[0]['last_n'],
                      'val_delta': delta(cell, reference) if i else None,
                      **({'step_delta': delta(cell, grid[i - 1]) if i else None}
                         if base['design'] == 'path' else {}),
                      'diverged': len(rs) - len(ok)})
    records.write_json(os.path.join(out, 'summary.json'), dict(
        seeds=seeds, reference=label(reference), varied=varied,
        design=base['design'], variants=table, runs=rows))
    md = markdown_table(table, grid, varied, base['design'],
                        [cell_config(base, cell, base['seed']) for cell in grid])
    records.write_atomic(os.path.join(out, 'table.md'), md)
    print(md)
    plot(out, [(cell, run_dir) for cell, _, run_dir in runs], grid, base['design'])
    draw_intervals(out, table, grid, base['design'])
    print(f"summary: {os.path.relpath(out)}/summary.json, summary.csv, table.md")
    return sum(r['diverged'] for r in table)


def names(grid, design='product'):
    """Each cell's name in words, as the table and intervals.png show it: what it changes
    from the reference ('activation=relu2, norm=layernorm'); on a path, what it adds to the
    cell before it ('+ norm=layernorm')."""
    if design == 'path':
        return ['the reference'] + [f"+ {changes(cell, before)}" for before, cell in zip(grid, grid[1:])]
    return ['the reference'] + [changes(cell, grid[0]) for cell in grid[1:]]


def shared(configs, grid):
    """The settings that every cell runs alike, in words, where they are not the defaults:
    'untied-norm, data=tinyshakespeare.txt, n-embd=128, ...'."""
    variants = {variant_of(cfg) for cfg in configs}
    same = [name for name in settings.SETTINGS if name not in ('seed', 'out', 'stop_after', 'tie_lm_head',
            'input_rmsnorm') and len({repr(cfg[name]) for cfg in configs}) == 1
            and configs[0][name] != settings.SETTINGS[name].default]
    value = lambda name: os.path.basename(configs[0][name]) if name == 'data' else said(name, configs[0][name])
    return ', '.join((sorted(variants) if len(variants) == 1 else [])
                     + [f"{name.replace('_', '-')}={value(name)}" for name in same])


def markdown_table(table, grid, varied, design='product', configs=None):
    """The table: a row a cell (table's rows, grid's cells), named by its values of the
    varied settings (product) or by what it changes (alone, path), with its figures; under
    it, the settings that every cell shares (configs: each cell's settings)."""
    last_n = {r['last_n'] for r in table if r['mean_loss_last_n'][0] is not None}
    own_n = lambda r: '' if len(last_n) <= 1 else f" (N={r['last_n']})"  # cells differ in steps
    def pm(stat, fmt='.4f'):
        mean, sd = stat
        if mean is None:
            return 'n/a'
        return f"{mean:{fmt}}" + ('' if sd is None else f" ± {sd:{fmt}}")

    if design == 'product':  # a column a setting, the variants' if they vary
        axes = (['variant'] if len({r['variant'] for r in table}) > 1 else []) + varied
        columns = [n.replace('_', '-') for name in axes for n in name.split('+')]
        cell_values = lambda r, name, cell: r['variant'] if name == 'variant' else \
            ' | '.join(said(n, v) for n, v in pairs(name, r[name]))  # settings varied together: each its own
    else:
        axes, columns = ['change'], ['change']
        words = dict(zip(grid, names(grid, design)))
        cell_values = lambda r, name, cell: words[cell] if cell != grid[0] else '(the reference)'
    with_samples = any(r[k][0] is not None for r in table for k in ('samples_train', 'samples_val', 'samples_new'))
    path = design == 'path'  # a column more: each step's own difference, from the cell above
    lines = ['| ' + ''.join(f"{c} | " for c in columns) + "val loss | Δ val vs the reference "
             "(95% CI) | " + ("Δ val vs the step before (95% CI) | " if path else '') +
             f"final loss | mean loss, last {min(last_n) if len(last_n) == 1 else 'N'}"
             " | tokens/s |" + (" samples: train / val / new |" if with_samples else ''),
             '|' + ' --- |' * (len(columns) + 5 + path + with_samples)]
    interval = lambda d: 'n/a (needs ≥ 2 paired seeds)' if d is None else \
        f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    for r, cell in zip(table, grid):
        delta = '(reference)' if cell == grid[0] else interval(r['val_delta'])
        if path:
            delta += ' | ' + ('' if cell == grid[0] else interval(r['step_delta']))
        shares = ' / '.join('n/a' if r[k][0] is None else f"{r[k][0]:.0%}"
                            for k in ('samples_train', 'samples_val', 'samples_new'))
        lines.append('| ' + ''.join(f"{cell_values(r, name, cell)} | " for name in axes)
                     + f"{pm(r['val_loss'])} | {delta} | {pm(r['final_loss'])}"
                     f" | {pm(r['mean_loss_last_n'])}{own_n(r)} | {pm(r['tokens_per_s'], '.0f')} |"
                     + (f" {shares} |" if with_samples else ''))
    lines += ['', f"The reference: {described(grid[0])}. Every cell: "
                  f"{shared(configs, grid) if configs else '(not recorded)'}.",
              f"Design: {DESIGN_WORDS[design]}. Mean ± standard deviation over "
              f"{table[0]['seeds']} seed(s)."]
    lines += [f"{described(cell)}: {r['diverged']} of {r['seeds']} runs diverged and are left out."
              for r, cell in zip(table, grid) if r['diverged']]
    return '\n'.join(lines) + '\n'


def changes(cell, reference):
    """What a cell changes from the reference cell, in words: 'activation=relu2, norm=layernorm'."""
    changed = [worded(name, value) for (name, value), part, ref in zip(cell, parts(cell), parts(reference))
               if part != ref]
    return ', '.join(changed) or '(the reference)'


def draw_intervals(out, table, grid, design='product'):
    """intervals.png: each cell's Δ validation loss against the reference, with its 95%
    interval, named by what it changes (plots.intervals)."""
    rows = [(name, None if r['val_delta'] is None else (
        r['val_delta']['mean'], r['val_delta']['low'], r['val_delta']['high']))
            for r, name in zip(table, names(grid, design))]
    try:
        if plots.intervals(os.path.join(out, 'intervals.png'), rows,
                           f"{os.path.basename(os.path.normpath(out))}, {table[0]['seeds']} seeds a "
                           f"cell; the reference: {described(grid[0])}"):
            print(f"plot: {os.path.relpath(out)}/intervals.png")
    except Exception as e:  # whatever fails in the picture, the summary stands
        print(f"intervals.png not written: {getattr(e, 'strerror', None) or str(e).strip()[:200]}")


def plot(out, runs, grid, design='product'):
    """losses.png: each cell's curves, the mean over its seeds, named in words (names); in
    small multiples, one panel a cell, when there are more cells than one picture holds."""
    if len(grid) > plots.MAX_PANELS:
        print(f"plot skipped: {len(grid)} cells are more than one picture shows "
              f"({plots.MAX_PANELS}); the table and summary hold them all")
        return
    draw = plots.curves if len(grid) <= 8 else plots.small_multiples
    if draw(os.path.join(out, 'losses.png'), curves(runs, dict(zip(grid, names(grid, design))))):
        print(f"plot: {os.path.relpath(out)}/losses.png")
    else:
        print(f"plot skipped: matplotlib is not installed; {plots.GET_MATPLOTLIB} to get losses.png")


def curves(runs, name_of=None):
    """{a cell's name: [(losses, validation history), ...]}: the curves of the completed
    runs among runs [(cell, run folder)], by cell; its name name_of[cell], or the cell in words."""
    groups = {}
    for cell, run_dir in runs:
        m = records.read_run(run_dir)
        if m['status'] == 'completed':
            groups.setdefault((name_of or {}).get(cell) or described(cell), []).append((m['losses'], m['val_history']))
    return groups


def finished_runs(out):
    """[(cell, run folder)] of the runs of the ablation in out that have their record, by
    its plan (the data need not be there: nothing is trained)."""
    cfg, seeds, axes = read_plan(out, with_data=False)
    return [(cell, os.path.join(out, 'runs', run_name(cell, seed))) for seed in seeds
            for cell in cells(axes, cfg['design'])
            if os.path.exists(os.path.join(out, 'runs', run_name(cell, seed), 'metrics.json'))]
