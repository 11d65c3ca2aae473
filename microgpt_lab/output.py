"""
output.py: what a command prints, which must never cost the work its record. Its output
survives a closed stream, a terminal that cannot encode a character, and a reader that
goes away (`| head`) or a disk that fills: the work goes on, and writes its record.
"""
import contextlib
import os
import sys

import data
from microgpt_lab import UserError, stopping


def program():
    """How the user started this program, for the hints it prints: 'python cli.py' as
    typed, or the console script's name."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else 'cli.py'
    return f"python {argv0}" if argv0.endswith('.py') else os.path.basename(argv0)


def standard_streams():
    """Make stdin, stdout and stderr usable whatever the shell left: a closed one (`>&-`)
    becomes /dev/null (else the next file opened would take its number, and prints would
    land in a record), and text that the terminal's encoding lacks is written with
    replacement characters (`?`), never an error."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    for name in ('stdout', 'stderr'):
        stream = getattr(sys, name)
        if stream is None:  # Python found the descriptor closed at its start
            setattr(sys, name, open(os.devnull, 'w', encoding='utf-8'))
        elif hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='replace' if name == 'stdout' else 'backslashreplace')


class QuietPipe:
    """A stream (stdout, a run's train.log) whose failures never stop the work: once its
    reader has gone (`cli.py train | head`) or it cannot be written (a full disk, a file
    size limit, a dropped terminal), the rest goes to /dev/null and the work goes on to
    write its record. .lost tells that it happened (sample stops then: nobody gets its
    samples), and .error why, unless the reader simply left (a broken pipe): the command
    says so when it ends (cli.main)."""
    def __init__(self, stream):
        self.stream, self.lost, self.error = stream, False, None

    def write(self, text):
        return self.guard(self.stream.write, text)

    def flush(self):
        return self.guard(self.stream.flush)

    def guard(self, call, *args):
        try:
            return call(*args)
        except OSError as e:
            self.lost = True
            if not isinstance(e, BrokenPipeError):
                self.error = self.error or e
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())

    def __getattr__(self, name):
        return getattr(self.stream, name)


def output_lost():
    """Whether stdout can no longer be written (see QuietPipe)."""
    return getattr(sys.stdout, 'lost', False)


def output_error():
    """Why stdout could not be written, as a phrase ('No space left on device'); None if it
    could, or its reader just left."""
    e = getattr(sys.stdout, 'error', None)
    return e and (e.strerror or str(e))


def check_written(command):
    """After a command, if stdout could not be written to its end: for `sample`, whose
    output is all it makes, a UserError; for the others, a warning line (the work went on)."""
    lost = output_error()
    if lost and command == 'sample':
        raise UserError(f"cannot write the samples to stdout ({lost})")
    if lost:
        print(f"warning: stdout could not be written to its end ({lost}); the work went on"
              f"{', and its record is whole' if command in ('train', 'ablate', 'bench') else ''}",
              file=sys.stderr)


def tell(e):
    """Say on stderr, in one line, what went wrong, if it is a failure a user can cause: a
    UserError or DataError, a file or folder the system refuses (permissions, a full disk),
    memory that runs out. Returns whether it was one of those."""
    if isinstance(e, (UserError, data.DataError)):
        why = str(e)
    elif isinstance(e, OSError):
        why = f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
    elif isinstance(e, MemoryError):
        why = "out of memory: try a smaller model (--n-embd, --n-layer), --batch-size or --block-size"
    else:
        return False
    print(f"error: {why}", file=sys.stderr)
    return True


def run(work):
    """Run a command, work() -> (its name, its exit status), as every command runs: its
    output kept alive whatever its reader does, SIGTERM and SIGHUP ending it as Ctrl-C does,
    a signal stopping it where it is consistent (stopping.py), and every error a user can
    cause told in one line. Returns the exit status."""
    standard_streams()
    stdout, sys.stdout = sys.stdout, QuietPipe(sys.stdout)
    try:
        with stopping.ending_signals():
            command, code = work()
        check_written(command)
        return code
    except (Exception, KeyboardInterrupt) as e:
        signalled = stopping.interruption(e)  # a signal, maybe in a library's error (numba's)
        if signalled:
            return stopping.interrupted(signalled)
        if not tell(e):  # one line, if the user can cause it; else a bug, told whole
            raise
        return 1
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


def format_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
