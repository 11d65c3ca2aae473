import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings

# numba compiles a kernel on its first call, so no per-example deadline; 25 examples a
# property keep the whole suite within a few minutes on 2 cores.
settings.register_profile('project', max_examples=25, deadline=None)
settings.load_profile('project')

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the top-level modules and the microgpt_lab package

NAMES = ROOT / 'names.txt'                                   # shipped with the project
REFERENCE_OUTPUT = ROOT / 'reference_seed42_output.txt'      # what the reference script printed


@pytest.fixture(scope='session')
def reference():
    """The reference script's printed run: its text, its 1000 step lines and its 20 samples."""
    text = REFERENCE_OUTPUT.read_text(encoding='utf-8')
    steps = re.findall(r'^step +\d+ / 1000 \| loss \d\.\d{4}$', text, re.M)
    samples = re.findall(r'^sample +\d+: \w+$', text, re.M)
    assert len(steps) == 1000 and len(samples) == 20  # the file is whole
    return dict(text=text, steps=steps, samples=samples)


def run_cli(*args, cwd=None, timeout=600, env=None):
    """cli.py in a subprocess, as a user runs it: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, str(ROOT / 'cli.py'), *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def main_output(main, *args):
    """(exit code, stdout, stderr) of cli.main(args) called in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_line_error(err):
    return err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err


DOCS = ['anna', 'bob', 'carla', 'dan', 'eve', 'fay', 'gil', 'hal', 'ida', 'jo', 'kai', 'lu']


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A temporary working folder holding docs.txt, twelve short names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    return tmp_path


def train_small(out, *extra, data='docs.txt'):
    """cli.main(['train', ...]) on docs.txt with a tiny model; extra options override."""
    import cli
    options = {'--data': str(data), '--steps': '12', '--samples': '3', '--n-embd': '8',
               '--n-head': '2', '--out': str(out)}
    flags = [x for x in extra if x in ('--tie-lm-head', '--no-input-rmsnorm', '--no-fetch')]
    pairs = [x for x in extra if x not in flags]
    options.update(zip(pairs[::2], map(str, pairs[1::2])))
    return cli.main(['train', *(x for kv in options.items() for x in kv), *flags])


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """The record of train_small's run (scalar mode, 12 steps), made once for the tests
    that only need a run record to read (copy it with the `run` fixture to change it)."""
    folder = tmp_path_factory.mktemp('trained')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    with contextlib.redirect_stdout(io.StringIO()):
        assert train_small(folder / 'run', data=folder / 'docs.txt') == 0
    return folder / 'run'


@pytest.fixture
def run(small, trained):
    """A copy of the trained record, small/run."""
    shutil.copytree(trained, small / 'run')
    return small / 'run'


# The two reference runs of 1000 scalar steps (about 25 s each, on one core) run in the
# background, one after the other, beside the tests that use one core: they start after the
# last test that runs processes on both cores (ablations, the cluster, bench), and the two
# tests that read them run last.
BACKGROUND = {}
READERS = ('test_run_alone_it_prints_the_reference_output_byte_for_byte',
           'test_cli_prints_every_loss_and_sample_the_reference_printed')
BOTH_CORES = ('test_ablation', 'test_bench', 'test_cluster')  # their modules


def start_reference_runs():
    folder = Path(tempfile.mkdtemp(prefix='reference-runs-'))
    shutil.copy(ROOT / 'microgpt.py', folder)  # copied anywhere, with names.txt beside it
    shutil.copy(ROOT / 'names.txt', folder)
    script = (f'"{sys.executable}" microgpt.py > alone.out 2> alone.err; echo $? > alone.code; '
              f'"{sys.executable}" "{ROOT / "cli.py"}" train --out run > cli.out 2> cli.err; '
              'echo $? > cli.code')
    BACKGROUND.update(folder=folder, process=subprocess.Popen(['sh', '-c', script], cwd=folder,
                                                         start_new_session=True))


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected
def pytest_collection_modifyitems(session, config, items):
    readers = [item for item in items if getattr(item, 'originalname', None) in READERS]
    if not readers:
        return
    items[:] = [item for item in items if item not in readers] + readers
    busy = [i for i, item in enumerate(items) if item.module.__name__ in BOTH_CORES]
    START['at'] = items[busy[-1] + 1] if busy else items[0]


START = {}  # the test before which the reference runs start


# bpe.py's numba functions (about 10 s to compile on a fresh clone) compile into numba's cache
# in the background from the start, on the core that the first tests leave idle as they
# compile tensorgpt's kernels; test_bpe then loads them.
WARM_BPE = ('import bpe; bpe.train_fast(["ab cd"], 2); bpe.train_fast(["\u00e9 ab"], 2); '
            'bpe.encode_fast("ab", [(97, 98)]); bpe.encode_fast("\u00e9", [])')
WARMING = {}


def pytest_sessionstart(session):
    WARMING['bpe'] = subprocess.Popen([sys.executable, '-c', WARM_BPE], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pytest_runtest_setup(item):
    if START.get('at') is item and not BACKGROUND:
        start_reference_runs()


def pytest_sessionfinish(session, exitstatus):
    if WARMING:
        WARMING.pop('bpe').kill()
    if BACKGROUND:
        if BACKGROUND['process'].poll() is None:
            os.killpg(BACKGROUND['process'].pid, signal.SIGKILL)  # sh and its python
        shutil.rmtree(BACKGROUND['folder'], ignore_errors=True)


def reference_run(name):
    """(exit code, stdout, stderr) of the background reference run `name`: 'alone' is
    `python microgpt.py`, 'cli' is `python cli.py train` (scalar mode)."""
    if not BACKGROUND:
        start_reference_runs()
    folder = BACKGROUND['folder']
    while not (folder / f'{name}.code').exists():
        assert BACKGROUND['process'].poll() is None or (folder / f'{name}.code').exists()
        time.sleep(0.5)
    read = lambda suffix: (folder / f'{name}.{suffix}').read_text()
    return int(read('code')), read('out'), read('err')


def tensorgpt_part_one():
    """tensorgpt.py's Part I alone, as a module (the file with Part II deleted): the NumPy
    math that each of Part II's kernels replaces, the tests' oracle."""
    source = (ROOT / 'tensorgpt.py').read_text(encoding='utf-8')
    module = type(sys)('tensorgpt_part_one')
    sys.modules[module.__name__] = module  # (dataclasses look their module up)
    exec(compile(part_one_source(source), 'tensorgpt.py (Part I)', 'exec'), module.__dict__)
    return module


def part_one_source(source):
    """tensorgpt.py's text up to Part II's banner."""
    return source[:source.index('# Part II: speed')].rsplit('# ====', 1)[0]
