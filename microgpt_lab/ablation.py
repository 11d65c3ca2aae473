"""
ablation.py: the `ablate` command: settings of the model or its training varied one way or
another, trained alike, and what their differences say.

Its grid (grid.py) crosses axes, each a setting (or settings varied together) with its
values, into cells; every cell is trained with every seed, each an ordinary training run
(training.py) with its record under runs/, in parallel: worker processes here, or a Dask
cluster's workers (cluster.py). Then the summary (summary.py) pairs each cell's validation
loss with the reference cell's of the same seed, and gives the mean difference with its 95%
confidence interval.

Read top to bottom: a run as a task, the workers that run them, what a run's folder holds
(to resume), handing the runs out, the command.
"""
import concurrent.futures
import concurrent.futures.process  # (BrokenProcessPool, with --jobs 1 too)
import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from multiprocessing import resource_tracker
from typing import NamedTuple

import data
from microgpt_lab import (UserError, cluster, output, provenance, records, settings, stopping,
                          summary, tokens, training)
from microgpt_lab.grid import (VARIANT_AXIS, cell_config, cell_name, cells, check_grid, axes_of,
                               names, read_plan, run_folder, write_plan)


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
            earlier = [e for e in env.get('earlier') or [] if isinstance(e, dict)]  # resumed: each session's
            kernels = set().union(provenance.kernels_of(env), *map(provenance.kernels_of, earlier))
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
    """Hand the runs todo [(settings, the cell in words, seed, whether it continues)] to the
    workers, never more at once than they take, so that none waits in a queue when the
    ablation stops; keep and report each one's record as it comes. Once a signal is caught or
    something fails, the runs under way stop after their step and return their records,
    and the rest are not handed over. Returns the first failure, and every record saved
    elsewhere than its folder (records.Rescued), as a phrase; or None."""
    queue, pending, failure, rescued = list(todo), {}, None, []
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
            cfg, called, seed, resume = queue.pop(0)
            state = training.recorded_run(cfg['out'], cfg['out'], resume=True)[1] if resume else None
            task = Task(cfg, sha, state, workers.in_place, code)  # its state read only now
            pending[workers.submit(run_task, task, shared, workers.stop)] = task, called, seed
        done, _ = concurrent.futures.wait(pending, timeout=0.2,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            task, called, seed = pending.pop(future)
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
                why = workers.failure(e, task.cfg['out']) or (
                    str(e) if isinstance(e, (UserError, data.DataError)) else
                    f"{os.path.relpath(task.cfg['out'])} failed: {type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
                failure = failure or why
                if isinstance(e, records.Rescued):  # saved elsewhere: each one says where
                    rescued.append(why)
                continue
            if result.metrics is not None:  # else it skipped: the ablation stopped first
                report(called, seed, result.metrics)
        if caught or failure:
            workers.stop.set(caught[0] if caught else signal.SIGTERM)  # once
    return '; '.join(dict.fromkeys(filter(None, [failure, *rescued]))) or None




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
        seeds = [cfg['seed'] + i for i in range(cfg['seeds'])]
        for cell in grid:
            tokens.check_data(cell_config(cfg, cell, cfg['seed']), contents, needed_by='ablate',
                              at_once=at_once)
            if cell_config(cfg, cell, cfg['seed'])['tokenizer'] not in ('char', 'bpe'):
                for seed in seeds:  # documents: a tokenizer.json trained on one seed's split
                    tokens.check_tokenizer(cell_config(cfg, cell, seed), data.sha256_of(cfg['data']))
        with cluster.connect(address) if address else contextlib.nullcontext() as remote:
            out, made = records.new_folder(cfg['out'], 'ablations', cfg['mode'], provenance.now())
            with records.owned(out, made=made):
                write_plan(out, cfg, axes, seeds)
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
    # the runs: every cell with every seed, and those of them still to go
    runs, todo = runs_to_go(base, seeds, grid, out)
    if remote is None:  # (a cluster's workers have their own kernels, in each run's record)
        note = kernel_note([d for _, _, d in runs if os.path.exists(os.path.join(d, 'metrics.json'))],
                           sum(cfg['mode'] == 'tensor' for cfg, *_ in todo))
        if note:
            print(note, file=sys.stderr)
    raw = data.read_bytes(base['data'])  # what every run trains on, sent with its task
    workers = remote or Local(jobs, threads, out, caught)
    print_header(base, seeds, axes, grid, threads, len(runs), todo, workers, out)
    # the running: each run's line as it finishes
    with workers if remote is None else contextlib.nullcontext():
        failure = execute(workers, todo, raw, caught, Progress(len(todo)))
    # the end: a failure or a signal leaves the summary to --resume; else the summary
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
    diverged = summary.summarize(out, base, runs, seeds, axes)
    if diverged:  # the hint of the first cell that did: its unusual settings, or its rates
        print(f"error: {len(diverged)} of {len(runs)} runs diverged, and the summary leaves them out; "
              f"{training.divergence_hint(cell_config(base, diverged[0], base['seed']))}", file=sys.stderr)
        return 2
    return 0


def runs_to_go(base, seeds, grid, out):
    """The plan's runs [(cell, seed, folder)], and those to go [(settings, the cell in
    words, seed, whether it continues from its checkpoint)]; a run's folder that it cannot go
    on from is emptied."""
    runs, todo = [], []
    called = dict(zip(grid, names(grid, base['design']) if base['design'] != 'product' else map(cell_name, grid)))
    for seed in seeds:
        for cell in grid:
            run_dir = os.path.abspath(run_folder(out, cell, seed))
            runs.append((cell, seed, run_dir))
            run_cfg = dict(cell_config(base, cell, seed), out=run_dir, stop_after=None)
            state = state_of(run_dir, run_cfg)
            if state == 'new':
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing to go on from: start over
            if state != 'done':
                todo.append((run_cfg, called[cell], seed, state == 'resume'))
    return runs, todo


def print_header(base, seeds, axes, grid, threads, n_runs, todo, workers, out):
    """The ablation's first line: its grid, its runs done and to go, and where they run."""
    steps = sorted({cell_config(base, cell, 0)['steps'] for cell in grid})
    grid_size = ' x '.join(f"{len(v)} {'variants' if n == VARIANT_AXIS else n.replace('_', '-')}"
                           for n, v in axes)
    if base['design'] == 'alone':
        grid_size = f"the reference and {counted(len(grid) - 1, 'cell')} of one change each"
    elif base['design'] == 'path':
        grid_size = f"the reference and a path of {counted(len(grid) - 1, 'change')}"
    resumed = sum(resume for *_, resume in todo)
    print(f"ablation: {grid_size} x {counted(len(seeds), 'seed')}, {'/'.join(map(str, steps))} steps, "
          f"{base['mode']} mode, {threads} thread(s) a run; {n_runs - len(todo)} runs done, "
          f"{len(todo)} to go{f' ({resumed} continued from their checkpoints)' if resumed else ''}"
          f", {workers.where(len(todo))}; record: {os.path.relpath(out)}", flush=True)


class Progress:
    """A line for each run as it finishes, with how many are left and about how long."""
    def __init__(self, runs):
        self.runs, self.finished, self.start = runs, 0, time.perf_counter()

    def __call__(self, cell, seed, m):
        self.finished += 1
        left = self.runs - self.finished
        eta = (time.perf_counter() - self.start) / self.finished * left
        num = lambda x, fmt: 'n/a' if x is None else format(x, fmt)
        print(f"[{self.finished:2d}/{self.runs}] {cell} seed {seed}: {m['status']}, final loss "
              f"{num(m['final_loss'], '.4f')}, val loss {num(m['val_loss'], '.4f')}, "
              f"val bpb {num(m.get('val_bpb'), '.4f')}, "
              f"{num(m['tokens_per_s'], '.0f')} tok/s; {left} to go"
              f"{f', about {output.format_time(eta)} left' if left else ''}", flush=True)
