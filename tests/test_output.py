"""output.py: a command's printed output never costs the work its record: a reader that
leaves, a disk that fills, a closed stream, a terminal that lacks a character."""
import errno
import io
import os
import subprocess
import sys

from microgpt_lab import output
from conftest import ROOT


class Failing(io.StringIO):
    def __init__(self, error):
        super().__init__()
        self.error, self.devnull = error, os.open(os.devnull, os.O_WRONLY)

    def write(self, text):
        raise self.error

    def fileno(self):
        return os.dup(self.devnull)  # (QuietPipe points the descriptor at /dev/null)


def test_a_reader_that_leaves_is_no_error_and_the_work_goes_on():
    pipe = output.QuietPipe(Failing(BrokenPipeError(errno.EPIPE, 'Broken pipe')))
    pipe.write('a line\n')
    pipe.write('and more\n')
    assert pipe.lost and pipe.error is None  # it just left: nothing to say


def test_a_full_disk_is_noted_once_to_be_said_at_the_end():
    pipe = output.QuietPipe(Failing(OSError(errno.ENOSPC, 'No space left on device')))
    pipe.write('a line\n')
    pipe.flush()
    assert pipe.lost and pipe.error.strerror == 'No space left on device'


def test_closed_streams_become_dev_null_and_missing_characters_are_replaced():
    probe = ("import os, sys; sys.path.insert(0, %r); from microgpt_lab import output;"
             "output.standard_streams(); print('caf\\u00e9 \\u2713');"
             "print(open(os.devnull).fileno(), file=sys.stderr)" % str(ROOT))
    p = subprocess.run(f'"{sys.executable}" -c "{probe}" >&-', shell=True, capture_output=True)
    assert p.returncode == 0 and int(p.stderr) > 2  # a file opened next is not stdout's number
    p = subprocess.run([sys.executable, '-c', probe], capture_output=True,
                       env=dict(os.environ, PYTHONIOENCODING='ascii'))
    assert p.returncode == 0 and p.stdout == b'caf? ?\n'


def test_the_program_is_named_as_the_user_started_it(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['cli.py'])
    assert output.program() == 'python cli.py'
    monkeypatch.setattr(sys, 'argv', ['/usr/bin/microgpt-lab'])
    assert output.program() == 'microgpt-lab'
