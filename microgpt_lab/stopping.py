"""
stopping.py: how work stops when asked to, where it is consistent, never in the middle.

Ctrl-C (SIGINT), SIGTERM (what timeout, docker and systemd send) and SIGHUP (a terminal or
ssh session that goes away) stop a command. A training run checks for them after every
step, then writes its record (stop_signals); any other command is ended by them as Ctrl-C
ends it, its folders released and nothing half-written (ending_signals); the exit status
says which signal (128 + its number). An ablation's runs in other processes stop by a flag
that each checks after its step: a file in the ablation's folder for the workers on this
machine (StopFile), a Dask event for a cluster's (ClusterStop).
"""
import contextlib
import os
import signal
import sys
import threading
import time

from microgpt_lab import records

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A run ends before it completes: .status is 'stopped' (--stop-after), 'interrupted'
    (a signal) or 'diverged'."""
    def __init__(self, status):
        super().__init__(status)
        self.status = status


@contextlib.contextmanager
def stop_signals():
    """Within, the stopping signals do not end the program: each appends its number to the
    yielded list, which the work checks after every training step, so that it stops there
    and writes its record."""
    caught = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in STOPPING}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------------
# A command: ended by SIGTERM and SIGHUP as by Ctrl-C (train and ablate catch them
# themselves, to stop after the step under way and keep their records).
class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the command is, as Ctrl-C raises KeyboardInterrupt."""
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def raise_signalled(signum, frame):
    raise Signalled(signum)


@contextlib.contextmanager
def ending_signals():
    """Within, SIGTERM and SIGHUP raise Signalled (Ctrl-C: KeyboardInterrupt)."""
    ending = [s for s in STOPPING if s != signal.SIGINT]
    previous = {s: signal.signal(s, raise_signalled) for s in ending}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interruption(e):
    """The KeyboardInterrupt (or Signalled) that e was raised from, if any: a signal that
    came while a library ran (numba loading a kernel) may come back wrapped in its error."""
    while e is not None and not isinstance(e, KeyboardInterrupt):
        e = e.__cause__ or e.__context__
    return e


def interrupted(e):
    """Say that the command was stopped by the signal of e; its exit status."""
    signum = getattr(e, 'signum', signal.SIGINT)
    print(f"\n{'interrupted' if signum == signal.SIGINT else signal.Signals(signum).name}",
          file=sys.stderr)
    return 128 + signum


def ignore_signals():
    """From now on the stopping signals are ignored: once done, a late one cannot change
    the exit status."""
    for s in STOPPING:
        signal.signal(s, signal.SIG_IGN)


def as_process(main):
    """main()'s exit status, run as the process's work: Ctrl-C is its to handle from the
    start, and once it is done a late signal cannot change the status."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = main()
    ignore_signals()
    return code


# ---------------------------------------------------------------------------
# An ablation's worker processes on this machine.
@contextlib.contextmanager
def signals_held():
    """Within, the stopping signals wait (blocked, not lost: they arrive on leaving), and a
    process started meanwhile keeps them blocked: a worker until it is ready to ignore them
    (worker_init), multiprocessing's resource tracker for good. A Ctrl-C at the terminal, or
    a hangup, reaches every process of the group; without this, one still starting up would
    die of it, with a traceback, and break the pool."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)


def worker_init(parent):
    """An idle worker ignores the signals (its parent handles them); a training one stops
    after its step (ablation.run_task). It started with them held (signals_held): ignored
    now, any that came meanwhile are dropped. And it ends when its parent does: a worker
    whose ablation was killed must not run on alone."""
    for s in STOPPING:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)

    def exit_with_parent():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)
    threading.Thread(target=exit_with_parent, daemon=True).start()


class StopFile:
    """The stop flag of an ablation's runs on this machine: a file in the ablation's folder,
    which holds the number of the signal that stopped them. (`caught`: the signals that
    this process caught, which stop a run it runs itself.)"""
    def __init__(self, path, caught=()):
        self.path, self.caught = path, caught

    def is_set(self):
        return bool(self.caught) or os.path.exists(self.path)

    def set(self, signum):
        if not os.path.exists(self.path):
            records.write_atomic(self.path, str(signum))

    def signum(self):
        with contextlib.suppress(OSError, ValueError):
            with open(self.path, encoding='utf-8') as f:
                return int(f.read())
        return self.caught[0] if self.caught else None


class ClusterStop:
    """The stop flag of a Dask cluster's runs: a Dask Event. This process sets it, and knows
    when it did; a run on a worker asks the scheduler, at most every quarter of a second."""
    def __init__(self, event, on_worker=False):
        self.event, self.on_worker, self.value, self.checked = event, on_worker, False, 0.0

    def __reduce__(self):  # what a task carries: the event, to be asked
        return ClusterStop, (self.event, True)

    def is_set(self):
        if self.on_worker and not self.value and time.monotonic() - self.checked >= 0.25:
            self.checked = time.monotonic()
            with contextlib.suppress(Exception):  # the scheduler gone: the run goes on
                self.value = self.event.is_set()
        return self.value

    def set(self, signum):
        if not self.value:
            self.value = True
            if self.event.client.status == 'running':  # (a lost scheduler would be waited for)
                with contextlib.suppress(Exception):
                    self.event.set()

    def signum(self):
        return None  # this process caught the signal itself
