"""
records.py: what a command leaves on disk, and reading it back.

A record is a folder that one command owns while it works (a `.running` file marks the
claim) and fills with files that are written whole or not at all. Every file a command
reads back is checked as it is read: a wrong one is a one-line `UserError` naming the file
and the field. A record also notes where it came from (commit, versions, machine), so that
it can be reproduced. And the printed output survives its reader going away.
"""
import contextlib
import csv
import ctypes
import functools
import hashlib
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project: results/ lives here
CLAIM = '.running'  # in a record's folder while a command writes it


class UserError(Exception):
    """Anything a user can get wrong, told in one line (cli.py prints it as `error: ...`)."""


# ---------------------------------------------------------------------------
# Writing: a file is written to a temporary name and renamed, so it is whole or absent.
def write_atomic(path, text):
    """text: a str, or bytes, or a function that returns the text's pieces, made as they
    are written (a large model's checkpoint, so that its whole text is never in memory at
    once)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'wb') if isinstance(text, bytes) else \
                open(tmp, 'w', encoding='utf-8', newline='') as f:
            f.writelines(text() if callable(text) else (text,))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def json_text(obj):
    """Strict JSON: a NaN or infinite number (a diverged loss) is written as null."""
    def strict(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: strict(v) for k, v in x.items()}
        return [strict(v) for v in x] if isinstance(x, (list, tuple)) else x
    return json.dumps(strict(obj), indent=2, allow_nan=False) + '\n'


def csv_text(header, rows):
    text = io.StringIO()
    w = csv.writer(text, lineterminator='\n')
    w.writerow(header)
    w.writerows(rows)
    return text.getvalue()


def write_json(path, obj):
    write_atomic(path, json_text(obj))


def write_record(out, files):
    """Write {name: text} (text as write_atomic takes it) into the folder out, in order;
    the last file (metrics.json) marks the record finished. If out cannot take them all (a full disk, a folder that became
    read-only), the ones written there are removed and the whole record goes to a new
    temporary folder instead, so no finished work is lost; the UserError says where."""
    written = []
    try:
        for name, text in files.items():
            write_atomic(os.path.join(out, name), text)
            written.append(name)
        return out
    except OSError as e:
        for name in written:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out, name))
        why = f"cannot write the record to {out} ({e.strerror or e})"
    rescue = None
    try:
        rescue = tempfile.mkdtemp(prefix='microgpt-lab-record-')
        for name, text in files.items():
            write_atomic(os.path.join(rescue, name), text)
    except OSError as e:
        if rescue:
            shutil.rmtree(rescue, ignore_errors=True)  # no half of a record is left anywhere
        raise UserError(f"{why}, nor to a temporary folder ({e.strerror or e}): "
                        "the record is lost") from None
    raise UserError(f"{why}; it was saved to {rescue} instead")


# ---------------------------------------------------------------------------
# Reading back: every file checked, every problem named by file and field.
def regular_file(path):
    """A UserError if path is there but is no file to read to its end: a FIFO or a device
    would keep a reader waiting, or reading, for ever."""
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise UserError(f"{path} is not a regular file")


def read_json(path, what, in_folder=True):
    """The JSON object in path, which should be `what` (e.g. 'a run record': the folder of
    path, in_folder; or 'a checkpoint': the file itself)."""
    regular_file(path)
    try:
        with open(path, encoding='utf-8') as f:
            obj = json.load(f)
    except FileNotFoundError:
        hint = f": is {os.path.dirname(path) or '.'} {what}?" if in_folder else ''
        raise UserError(f"{path} not found{hint}") from None
    except IsADirectoryError:
        hint = 'not a file' if in_folder else 'pass the file in it'
        raise UserError(f"{path} is a directory, {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not readable JSON ({str(e)[:100]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} should hold a JSON object, not {type(obj).__name__}")
    return obj


def field(obj, key, path, kind, check=None, why=''):
    """obj[key], which must be of `kind` (a type or a tuple of types; a bool is not a
    number) and pass `check`; else a UserError naming path and key."""
    if key not in obj:
        raise UserError(f"{path}: {key} is missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds) \
            or (check is not None and not check(value)):
        raise UserError(f"{path}: {key} = {json.dumps(value)[:60]} is not {why or kinds[0].__name__}")
    return value


def read_losses(path, steps, counted_by='the checkpoint'):
    """The first `steps` losses of a losses.csv (step,loss; one row a step, from 1), as
    many as `counted_by` says the run made."""
    regular_file(path)
    try:
        with open(path, encoding='utf-8', newline='') as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserError(f"{path} not found: the run's losses are needed to continue it") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not readable ({e})") from None
    if not rows or rows[0] != ['step', 'loss']:
        raise UserError(f"{path}: the first line should be 'step,loss'")
    losses = []
    for i, row in enumerate(rows[1:steps + 1], 1):
        try:
            step, loss = int(row[0]), float(row[1])
            if len(row) != 2:
                raise ValueError('more than a step and a loss')
        except (ValueError, IndexError):
            raise UserError(f"{path}, line {i + 1}: not a step and a loss: {','.join(row)!r}") from None
        if step != i or not math.isfinite(loss) or loss < 0:  # a cross-entropy is >= 0
            raise UserError(f"{path}, line {i + 1}: expected step {i} and a finite loss >= 0")
        losses.append(loss)
    if len(losses) < steps:
        raise UserError(f"{path} has {len(losses)} steps, {counted_by} {steps}")
    return losses


def read_run(run_dir):
    """A finished run's metrics.json, the fields that summaries and plots use checked, and
    its losses.csv: the metrics, with 'losses' added."""
    path = os.path.join(run_dir, 'metrics.json')
    m = read_json(path, 'a run record')
    for key in ('final_loss', 'mean_loss_last_n', 'val_loss', 'steps_per_s', 'tokens_per_s'):
        field(m, key, path, (int, float, type(None)))
    field(m, 'status', path, str)
    field(m, 'steps', path, int, lambda n: n >= 0, 'a step count')
    field(m, 'last_n', path, int)
    field(m, 'val_history', path, list, lambda h: all(
        isinstance(e, list) and len(e) in (2, 3) and all(type(x) in (int, float) for x in e)
        for e in h), 'a list of [step, validation loss, training time]')
    shares = m.get('samples') or {}
    if not isinstance(shares, dict) or set(shares) - {'train', 'val', 'new'}:
        raise UserError(f"{path}: samples should be the shares of train, val and new samples")
    m['samples'] = shares
    if m['status'] == 'completed':
        if m['steps'] < 1:
            raise UserError(f"{path}: a completed run has steps >= 1, not {m['steps']}")
        m['losses'] = read_losses(os.path.join(run_dir, 'losses.csv'), m['steps'], 'metrics.json')
    return m


# ---------------------------------------------------------------------------
# Folders: a command owns the folder it writes, so that two at once cannot mix records.
def claim(folder, must_be_empty=True):
    """Mark folder as this process's by creating folder/.running exclusively, with its
    process id and machine. Fails, with a UserError, if a live command holds it, or
    (must_be_empty) if it holds anything. A claim left by a process that is gone (killed
    with -9, a machine that rebooted) is taken over, with a note on stderr."""
    path = os.path.join(folder, CLAIM)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = dead_owner(path)
        if owner is None:
            raise UserError(f"{folder} is in use by another command (if none is running, "
                            f"remove {path})") from None
        with contextlib.suppress(OSError):  # a note: a stderr that fails changes nothing
            print(f"note: {folder} was claimed by process {owner}, which is gone: taken over",
                  file=sys.stderr)
        release(folder)
        return claim(folder, must_be_empty)
    except OSError as e:
        raise UserError(f"cannot write in {folder}: {e.strerror}") from None
    with os.fdopen(fd, 'w') as f:
        f.write(f"{os.getpid()} {platform.node()}\n")
    if must_be_empty and set(os.listdir(folder)) != {CLAIM}:
        release(folder)
        raise UserError(f"{folder} is not empty; choose another --out")


def dead_owner(path):
    """The process id in the claim file at path if that process is gone from this machine;
    None while it may be alive (or the claim is another machine's, or unreadable)."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read().strip()
        if not text:  # killed between making the claim and writing in it
            return 'unknown' if time.time() - os.path.getmtime(path) > 60 else None
        pid, _, host = text.partition(' ')
        pid = int(pid)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (host and host != platform.node()) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except OSError:  # alive, another user's
        return None
    return None


def release(folder):
    with contextlib.suppress(OSError):
        os.remove(os.path.join(folder, CLAIM))


@contextlib.contextmanager
def owned(folder, must_be_empty=True, made=False):
    """Claim folder for the work within; release it after. A folder this command `made`
    that the work leaves empty (it failed before writing anything) is removed."""
    claim(folder, must_be_empty)
    try:
        yield folder
    finally:
        release(folder)
        if made and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def results_root():
    """results/ of the project when run from its checkout; else results/ where the user is
    (an installed copy must not write into site-packages)."""
    mine = os.path.join(ROOT, 'results')
    return mine if os.path.isdir(mine) else os.path.abspath('results')


def new_folder(out, default, label, start):
    """The folder for a new record, created if need be: `out`, or a fresh one under
    results/default named for the start time and label. Returns (path, whether this call
    made it); claim it with owned()."""
    if out is None:
        base = os.path.join(results_root(), default, f"{start:%Y%m%d-%H%M%S}-{label}")
        for i in range(1, 1000):  # a command started in the same second: take the next name
            path = base if i == 1 else f"{base}-{i}"
            try:
                os.makedirs(path)
                return path, True
            except FileExistsError:
                continue
            except OSError as e:
                raise UserError(f"cannot create {path}: {e.strerror}") from None
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    made = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror}") from None
    return out, made


def program():
    """How the user started this program, for the hints it prints: 'python cli.py' as
    typed, or the console script's name."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else 'cli.py'
    return f"python {argv0}" if argv0.endswith('.py') else os.path.basename(argv0)


# ---------------------------------------------------------------------------
# The environment a record notes: where it came from, on what.
def git_commit():
    """(commit, whether tracked files differ from it), or ('unknown', None) outside git."""
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 'unknown', None
    if out.returncode:
        return 'unknown', None
    return out.stdout.strip(), bool(dirty.stdout.strip())


CODE_FILES = ('microgpt.py', 'tensorgpt.py', 'data.py')  # beside microgpt_lab/, which counts too


@functools.cache
def code_version():
    """A hash of the code that makes a run (the models, the data, the lab's modules; not the
    command line): two copies of the project with the same version give the same numbers
    on the same environment, with or without git. Read once, as the process loads that code
    (ablation.py asks on import), so that an edit made while it runs does not change it."""
    import data  # (imported here: the data module needs none of this one)
    h = hashlib.sha256()
    lab = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(os.path.abspath(data.__file__))  # pip may put it apart
    paths = [os.path.join(top, name) for name in CODE_FILES] + sorted(
        os.path.join(lab, name) for name in os.listdir(lab) if name.endswith('.py'))
    for path in paths:
        with open(path, 'rb') as f:
            h.update(f"{os.path.basename(path)}\0".encode() + f.read() + b'\0')
    return h.hexdigest()[:12]


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def version_of(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return 'not installed'


def blas():
    try:
        info = np.show_config(mode='dicts')['Build Dependencies']['blas']
        return f"{info.get('name')} {info.get('version')}"
    except Exception:  # older NumPy has no dict mode; this is a note, never an error
        return 'unknown'


def thread_pools():
    """What runs the products now: each BLAS (and OpenMP) library loaded, its version, the
    kernel it chose for this CPU ('architecture', e.g. SkylakeX) and its thread count; and
    numba's thread count, if numba is loaded."""
    import threadpoolctl
    pools = [{k: info.get(k) for k in ('user_api', 'internal_api', 'version', 'architecture',
                                       'num_threads', 'threading_layer')}
             for info in threadpoolctl.threadpool_info()]
    if 'numba' in sys.modules:
        pools.append(dict(user_api='numba', num_threads=sys.modules['numba'].get_num_threads(),
                          threading_layer=sys.modules['numba'].config.THREADING_LAYER))
    return pools


# The variables that pin a BLAS to a kernel other than the one it would choose for this CPU.
KERNEL_PINS = ('OPENBLAS_CORETYPE', 'MKL_ENABLE_INSTRUCTIONS', 'MKL_DEBUG_CPU_TYPE')


def kernel_pinned():
    """One line saying that the environment pins the BLAS kernel (and to which), or None."""
    pins = [f"{v}={os.environ[v]}" for v in KERNEL_PINS if v in os.environ]
    if not pins:
        return None
    kernels = sorted({p['architecture'] for p in thread_pools() if p.get('architecture')})
    return (f"warning: {', '.join(pins)} in the environment pins the BLAS kernel "
            f"({'/'.join(kernels) or 'unknown'} here); without it, as users run, BLAS picks this "
            f"CPU's own: for speed figures, run with env -u {' -u '.join(v for v in KERNEL_PINS if v in os.environ)}")


# Peak memory: the kernel's high-water mark of this process's resident set, which writing
# 5 to /proc/self/clear_refs resets (Linux), so that each run of a worker reports its own.
# Freed memory goes back to the system first (malloc_trim): tensorgpt asks glibc to keep it
# for the next step, and an earlier run's would count as this one's.
def reset_peak_memory():
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass  # elsewhere: the process's peak so far


def peak_memory_mb():
    """The peak resident memory, in MB, since reset_peak_memory (or the process's start)."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024
    except (OSError, StopIteration, ValueError):
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
        return peak / (2 ** 20 if sys.platform == 'darwin' else 1024)


THREAD_PREFIXES = ('OPENBLAS_', 'MKL_', 'OMP_', 'NUMBA_', 'GOTO_', 'BLIS_', 'VECLIB_')


def environment(seed, mode, backend, start):
    commit, dirty = git_commit()
    return dict(seed=seed, mode=mode, backend=backend, commit=commit, commit_dirty=dirty,
                code=code_version(), host=platform.node(),
                python=platform.python_version(), numpy=np.__version__,
                numba=version_of('numba'), blas=blas(), cpu=cpu_model(), cores=os.cpu_count(),
                thread_pools=thread_pools(),
                variables={k: v for k, v in sorted(os.environ.items())
                           if k.startswith(THREAD_PREFIXES)},
                start_time=start.isoformat(timespec='seconds'), argv=sys.argv[1:])


def now():
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------
# The printed record: a command's output, which must never cost the work its record.
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
