import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# numba compiles a kernel on its first call, so no per-example deadline; 25 examples a
# property keep the whole suite within a few minutes on 2 cores.
settings.register_profile('project', max_examples=25, deadline=None)
settings.load_profile('project')

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the modules are flat files at the top level

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
