"""cluster.py: ablations on a real Dask cluster on loopback, a `dask scheduler` and `dask
worker` processes started here and stopped after: the same results as --jobs 1, a worker
killed mid-run, a scheduler lost midway, Ctrl-C, an unreachable scheduler, a worker on
other code, and Dask not installed."""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli
from microgpt_lab import provenance
from conftest import DOCS, ROOT, main_output, one_line_error

DASK = Path(sys.executable).with_name('dask')  # the command line that comes with distributed
GRID = ('--mode', 'tensor', '--n-embd', '8', '--n-head', '2', '--steps', '300', '--samples', '3',
        '--variants', 'untied-norm,tied-norm', '--seeds', '2', '--data', 'docs.txt')
RUNS = [f"{v}-seed{s}" for v in ('untied-norm', 'tied-norm') for s in (42, 43)]
SPEED = ('steps_per_s', 'tokens_per_s')  # the only figures that differ between two machines


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Loopback:
    """A Dask scheduler on 127.0.0.1 and its workers, real processes: started, killed."""
    def __init__(self, folder, **popen):
        self.folder, self.port, self.procs = folder, free_port(), {}
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.start('scheduler', 'scheduler', '--host', '127.0.0.1', '--port', str(self.port),
                   '--no-dashboard', **popen)
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(('127.0.0.1', self.port)) == 0:
                    break
            assert time.time() < deadline and self.procs['scheduler'].poll() is None
            time.sleep(0.05)

    def start(self, name, *args, **popen):
        log = open(self.folder / f"{name}.log", 'w')
        self.procs[name] = subprocess.Popen([str(DASK), *args], stdout=log, stderr=log, **popen)
        return self.procs[name]

    def worker(self, name, threads=1, **popen):
        """A worker without a nanny (its process is the worker: a kill is a lost worker),
        waited for until the scheduler knows it."""
        self.start(name, 'worker', self.address, '--no-nanny', '--nthreads', str(threads),
                   '--no-dashboard', '--name', name, **popen)
        deadline = time.time() + 60
        while name not in self.workers():
            assert time.time() < deadline and self.procs[name].poll() is None, \
                (self.folder / f"{name}.log").read_text()
            time.sleep(0.1)

    def workers(self):
        from distributed import Client
        with Client(self.address, timeout=10, set_as_default=False) as c:
            return {w['name'] for w in c.scheduler_info()['workers'].values()}

    def kill(self, name):
        self.procs[name].kill()
        self.procs[name].wait()

    def kill_while_training(self, name, tmp, p):
        """Kill worker `name`, started with TMPDIR=tmp, once it trains a run of the ablation
        p (its train.log there has a step line), as a lost machine or the OOM killer would."""
        deadline = time.time() + 120
        while not any('step' in log.read_text() for log in tmp.glob('*/train.log')):
            assert time.time() < deadline and p.poll() is None, p.communicate()
            time.sleep(0.02)
        self.kill(name)

    def stop(self):
        for p in self.procs.values():
            p.kill()
        for p in self.procs.values():
            p.wait()


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cluster')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    return folder


@pytest.fixture(scope='module')
def loopback(folder):
    """The scheduler and two workers that most tests share."""
    cluster = Loopback(folder)
    try:
        cluster.worker('w1')
        cluster.worker('w2')
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope='module')
def baseline(folder):
    """The grid, run by --jobs 1 on this machine."""
    os.chdir(folder)
    code, out, err = main_output(cli.main, 'ablate', *GRID, '--jobs', '1', '--out', 'base')
    assert code == 0, err
    return folder / 'base'


@pytest.fixture
def here(folder, monkeypatch):
    monkeypatch.chdir(folder)
    return folder


def ablate(*args):
    """cli.py ablate of the grid, a process of its own, as a user starts it."""
    return subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), 'ablate', *GRID, *args],
                            cwd=Path.cwd(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def same_as(abl, base):
    """Every run's losses and samples, and the summary but its speeds, bit for bit."""
    for r in RUNS:
        for name in ('losses.csv', 'samples.txt'):
            assert (abl / 'runs' / r / name).read_bytes() == (base / 'runs' / r / name).read_bytes(), r
    rows = lambda d: [{k: v for k, v in row.items() if k not in SPEED}
                      for row in csv.DictReader(open(d / 'summary.csv'))]
    assert rows(abl) == rows(base)
    cells = lambda d: [{k: v for k, v in c.items() if k not in SPEED}
                       for c in json.loads((d / 'summary.json').read_text())['variants']]
    assert cells(abl) == cells(base)


def until_a_run_is_done(p):
    """Read the ablation p's output up to its first finished run's line."""
    for line in p.stdout:
        if line.startswith('[ 1/4]'):
            return


def test_a_grid_on_the_cluster_gives_bit_for_bit_the_results_of_jobs_1(here, loopback, baseline):
    code, out, err = main_output(cli.main, 'ablate', *GRID, '--cluster', loopback.address,
                                 '--out', 'abl')
    assert code == 0, err
    assert f"4 to go, on the Dask cluster at {loopback.address} (2 workers)" in out
    assert '[ 1/4]' in out and '3 to go, about' in out and '[ 4/4]' in out  # progress, ETA
    same_as(here / 'abl', base=baseline)
    # the records, written here, say where they are here; their workers ran this code
    run = here / 'abl' / 'runs' / RUNS[0]
    config = json.loads((run / 'config.json').read_text())
    assert config['out'] == str(run) and config['data'] == str(here / 'docs.txt')
    metrics = json.loads((run / 'metrics.json').read_text())
    assert metrics['environment']['code'] == provenance.code_version()
    assert 'step' in (run / 'train.log').read_text() and (run / 'checkpoint.json').exists()
    assert not list(run.glob('.*'))  # no claim or stop file came back


def test_a_worker_killed_mid_run_has_its_run_done_again_elsewhere(here, loopback, baseline):
    victim_tmp = here / 'victim-tmp'  # where the victim trains: to see that it is under way
    victim_tmp.mkdir()
    loopback.worker('victim', env=dict(os.environ, TMPDIR=str(victim_tmp)))
    p = ablate('--cluster', loopback.address, '--out', 'killed')
    loopback.kill_while_training('victim', victim_tmp, p)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and 'Traceback' not in err, err
    same_as(here / 'killed', base=baseline)


def test_ctrl_c_keeps_the_finished_runs_and_resume_finishes_on_the_cluster(here, loopback, baseline):
    p = ablate('--cluster', loopback.address, '--out', 'stopped')
    until_a_run_is_done(p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err == '', err
    assert f"ablate --resume stopped --cluster {loopback.address}" in out
    runs = [d for d in (here / 'stopped' / 'runs').iterdir() if (d / 'metrics.json').exists()]
    assert 1 <= len(runs) < 4  # the one finished, and those under way stopped after their step
    code, out, err = main_output(cli.main, 'ablate', '--resume', 'stopped', '--cluster', loopback.address)
    assert code == 0, err
    same_as(here / 'stopped', base=baseline)


def test_a_run_whose_workers_all_die_stops_the_ablation_in_one_line(here, tmp_path):
    # The scheduler gives up on a task after its allowed failures: none here, so one death.
    cluster = Loopback(tmp_path, env=dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES='0'))
    doomed_tmp = tmp_path / 'doomed-tmp'
    doomed_tmp.mkdir()
    try:
        cluster.worker('doomed', env=dict(os.environ, TMPDIR=str(doomed_tmp)))
        p = ablate('--cluster', cluster.address, '--out', 'doomed')
        cluster.kill_while_training('doomed', doomed_tmp, p)
        out, err = p.communicate(timeout=120)
    finally:
        cluster.stop()
    assert p.returncode == 1 and one_line_error(err), err
    assert f"every worker that ran doomed/runs/{RUNS[0]} died" in err and 'ablate --resume doomed' in err


def test_a_lost_scheduler_keeps_the_finished_runs_and_resume_finishes_here(here, baseline):
    cluster = Loopback(here)
    try:
        cluster.worker('lone')
        p = ablate('--cluster', cluster.address, '--out', 'lost')
        until_a_run_is_done(p)
        cluster.kill('scheduler')
        out, err = p.communicate(timeout=120)
    finally:
        cluster.stop()
    assert p.returncode == 1 and one_line_error(err), err
    assert f"lost the Dask scheduler at {cluster.address}" in err and 'ablate --resume lost' in err
    assert (here / 'lost' / 'runs' / RUNS[0] / 'metrics.json').exists()  # kept
    code, out, err = main_output(cli.main, 'ablate', '--resume', 'lost', '--jobs', '1')
    assert code == 0 and 'runs done' in out, err
    same_as(here / 'lost', base=baseline)


def test_a_worker_on_other_code_or_threads_is_refused_in_one_line(here, tmp_path):
    other = tmp_path / 'other'  # a copy of the project, changed
    other.mkdir()
    for name in provenance.CODE_FILES:
        shutil.copy(ROOT / name, other)
    shutil.copytree(ROOT / 'microgpt_lab', other / 'microgpt_lab',
                    ignore=shutil.ignore_patterns('__pycache__'))
    with open(other / 'tensorgpt.py', 'a') as f:
        f.write('\n# another version\n')
    cluster = Loopback(tmp_path)
    try:
        cluster.worker('threaded', threads=2)
        code, _, err = main_output(cli.main, 'ablate', *GRID, '--cluster', cluster.address,
                                   '--out', 'threaded')
        assert code == 1 and one_line_error(err) and 'runs 2 threads' in err, err
        assert not (here / 'threaded').exists()  # refused before anything was made
        cluster.kill('threaded')
        cluster.worker('other', cwd=other, env=dict(os.environ, PYTHONPATH=str(other)))
        code, _, err = main_output(cli.main, 'ablate', *GRID, '--cluster', cluster.address,
                                   '--out', 'mixed')
    finally:
        cluster.stop()
    assert code == 1 and one_line_error(err), err
    assert 'Dask worker other (tcp://127.0.0.1:' in err and 'runs other code' in err
    assert not list((here / 'mixed' / 'runs').glob('*/metrics.json'))  # nothing from it kept


def test_an_unreachable_scheduler_is_one_line_before_any_folder(here, monkeypatch):
    import dask
    monkeypatch.setitem(dask.config.config['distributed']['comm']['timeouts'], 'connect', '1s')
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    code, _, err = main_output(cli.main, 'ablate', *GRID, '--cluster', address, '--out', 'none')
    assert code == 1 and one_line_error(err) and f"cannot reach a Dask scheduler at {address}" in err
    assert not (here / 'none').exists()


def test_without_distributed_cluster_says_how_to_get_it(here, monkeypatch):
    monkeypatch.setitem(sys.modules, 'distributed', None)  # as if not installed: import fails
    code, _, err = main_output(cli.main, 'ablate', *GRID, '--cluster', 'tcp://127.0.0.1:8786',
                               '--out', 'none')
    assert code == 1 and one_line_error(err) and "pip install -e '.[cluster]'" in err
    assert not (here / 'none').exists()
    code, _, err = main_output(cli.main, 'ablate', *GRID, '--cluster', 'tcp://127.0.0.1:8786',
                               '--jobs', '2')
    assert code == 1 and one_line_error(err) and '--jobs and --cluster' in err
