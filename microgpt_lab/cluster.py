"""
cluster.py: an ablation's runs on a Dask cluster (`ablate --cluster ADDRESS`).

A dask.distributed scheduler hands tasks to its workers, on any machines. ablation.py
hands it the runs through the client's executor, as it hands them to a pool of processes
for --jobs: the same tasks, the same results. Everything Dask is here: connecting (one
line, before anything is made, if the scheduler cannot be reached or Dask is not
installed), the data sent with every run, the flag that stops their runs, and what
a lost worker or scheduler means. The workers share no disk with this process: each run
comes back as its record's files (ablation.run_task), which this process writes.

A worker runs one run at a time (`dask worker ADDRESS --nthreads 1`, and --nworkers N for
N of them on a machine): a run sets its whole process's BLAS threads and prints its
train.log. The scheduler runs a task again elsewhere if its worker dies; a run is seeded,
so it gives the same numbers there.
"""
import contextlib
import logging
import os
import platform
import sys
import time
import uuid

from microgpt_lab import UserError, stopping

GET_DISTRIBUTED = "pip install -e '.[cluster]' (or pip install distributed)"


@contextlib.contextmanager
def connect(address):
    """The cluster whose scheduler is at address (tcp://host:port), for the work within;
    a UserError if Dask is missing or the scheduler does not answer within Dask's connect
    timeout (distributed.comm.timeouts.connect: 30 s, or DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)."""
    try:
        import distributed
    except ImportError:
        raise UserError(f"--cluster needs Dask's distributed, which is not installed: "
                        f"{GET_DISTRIBUTED}") from None
    quiet('distributed')  # its tracebacks of a lost connection: we say it in a line
    try:
        client = distributed.Client(address, set_as_default=False)
    except Exception as e:  # a timeout, a refused connection, an address it cannot read
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot reach a Dask scheduler at {address} ({why}): start one with "
                        "`dask scheduler`, or check the address") from None
    try:
        cluster = Cluster(client, address, distributed)
        cluster.check_workers()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=5)


def quiet(name):
    """No log lines from the logger `name` and those below it (Dask gives some their own
    levels)."""
    for logger in [logging.getLogger(name)] + [logging.getLogger(n) for n in list(
            logging.root.manager.loggerDict) if n.startswith(name + '.')]:
        logger.setLevel(logging.CRITICAL + 1)
        for handler in logger.handlers:
            handler.setLevel(logging.CRITICAL + 1)


class Cluster:
    """The workers of a Dask cluster, as ablation.execute uses them (see ablation.Local)."""
    in_place = False  # they return their records' files

    def __init__(self, client, address, distributed):
        self.client, self.address = client, address
        self.executor = client.get_executor(pure=False)  # every run is a task of its own
        self.stop = stopping.ClusterStop(distributed.Event(f"microgpt-lab-stop-{uuid.uuid4().hex}", client=client))
        self.workers, self.asked = {}, float('-inf')

    def check_workers(self, every=1.0):
        """The workers now, {address: threads}, asked at most every `every` seconds; a
        UserError if one of them runs more than one thread."""
        if time.monotonic() - self.asked >= every and self.client.status == 'running':
            with contextlib.suppress(Exception):  # a scheduler gone: lost() says so
                self.workers = self.client.nthreads(callback_timeout=10)
            self.asked = time.monotonic()
        many = [(w, n) for w, n in self.workers.items() if n > 1]
        if many:
            raise UserError(f"the Dask worker at {many[0][0]} runs {many[0][1]} threads: a run "
                            "sets its process's BLAS threads, so start workers with --nthreads 1 "
                            "(and --nworkers N for N on a machine)")
        return self.workers

    def submit(self, fn, *args):
        return self.executor.submit(fn, *args)

    def capacity(self):
        """Runs at once: one a worker (at least one, to wait for a worker to join)."""
        return max(1, len(self.check_workers()))

    def share(self, raw):
        """What a task takes for the data's bytes: the bytes themselves, with every task. (Bytes
        scattered once to the workers are lost with the workers that hold them, and with
        them every run that needs them; a task that carries its own is run again anywhere.
        No more runs are handed over at once than there are workers, so the scheduler holds
        a copy a worker.) Here the ablation waits, too, for a first worker to join."""
        while not self.check_workers(every=0.5):  # none yet: they may be starting
            if self.client.status != 'running':
                raise UserError(f"lost the Dask scheduler at {self.address}")
            print(f"waiting for a worker to join the scheduler at {self.address} (start one "
                  f"with: dask worker {self.address} --nthreads 1)", flush=True)
            time.sleep(2)
        return raw

    def lost(self):
        """Why the runs were cancelled, if the scheduler is gone."""
        return None if self.client.status == 'running' else \
            f"lost the Dask scheduler at {self.address}"

    def failure(self, e, run_dir):
        if type(e).__name__ == 'KilledWorker':  # the scheduler's retries ran out
            return (f"every worker that ran {os.path.relpath(run_dir)} died (killed, or out of "
                    "memory?)")
        return None

    def where(self, todo):
        n = len(self.check_workers())
        return f"on the Dask cluster at {self.address} ({n} worker{'s' * (n != 1)})"


def worker_name():
    """Who runs this, for messages: a Dask worker's name and address, or this process."""
    if 'distributed' in sys.modules:
        import distributed
        with contextlib.suppress(ValueError):  # not in a worker
            w = distributed.get_worker()
            return f"Dask worker {w.name} ({w.address})"
    return f"process {os.getpid()} on {platform.node()}"
