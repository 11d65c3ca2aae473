"""
provenance.py: where a record came from, so that it can be reproduced and compared: the
code (its commit, and a hash of the modules that make a run), the versions, the machine,
the BLAS library and the kernel it chose, the threads, and the run's peak memory.
"""
import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata

import numpy as np

import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project


# ---------------------------------------------------------------------------
# The code
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
    h = hashlib.sha256()
    lab = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(os.path.abspath(data.__file__))  # pip may put it apart
    paths = [os.path.join(top, name) for name in CODE_FILES] + sorted(
        os.path.join(lab, name) for name in os.listdir(lab) if name.endswith('.py'))
    for path in paths:
        with open(path, 'rb') as f:
            h.update(f"{os.path.basename(path)}\0".encode() + f.read() + b'\0')
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------
# The machine, and what runs the products
def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def cpu_id():
    """The CPU's family and model, and whether it has AVX-512 ('family 26 model 2, AVX-512'):
    machines that cpu_model names alike ('AMD EPYC') may differ here."""
    try:
        with open('/proc/cpuinfo') as f:
            info = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines() if ':' in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        avx512 = 'avx512f' in info.get('flags', '').split()
        return f"family {info['cpu family']} model {info['model']}{', AVX-512' if avx512 else ''}"
    except (OSError, KeyError, ValueError):
        return 'unknown'


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


def kernels_of(environment):
    """The BLAS kernels a record's environment names ({'SkylakeX'}); thread_pools() now if None."""
    pools = thread_pools() if environment is None else environment.get('thread_pools')
    return {p['architecture'] for p in (pools if isinstance(pools, list) else [])
            if isinstance(p, dict) and isinstance(p.get('architecture'), str) and p['architecture']}


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


# ---------------------------------------------------------------------------
# All of it, as a record notes it
THREAD_PREFIXES = ('OPENBLAS_', 'MKL_', 'OMP_', 'NUMBA_', 'GOTO_', 'BLIS_', 'VECLIB_')


def environment(seed, mode, backend, start):
    commit, dirty = git_commit()
    return dict(seed=seed, mode=mode, backend=backend, commit=commit, commit_dirty=dirty,
                code=code_version(), host=platform.node(),
                python=platform.python_version(), numpy=np.__version__,
                numba=version_of('numba'), blas=blas(), cpu=cpu_model(), cpu_id=cpu_id(), cores=os.cpu_count(),
                thread_pools=thread_pools(),
                variables={k: v for k, v in sorted(os.environ.items())
                           if k.startswith(THREAD_PREFIXES)},
                start_time=start.isoformat(timespec='seconds'), argv=sys.argv[1:])


def now():
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------
# A resumed run: what ran the steps before this session.
def sessions_before(before, step):
    """The environments of a resumed run's sessions before this one, each with the step
    it ended at: those its record lists, then its own (none if it recorded none)."""
    if before is None:
        return []
    return [*before.get('earlier', []),
            dict({k: v for k, v in before.items() if k != 'earlier'}, last_step=step)]


def kernel_change(cfg, env, step):
    """A note if a resumed tensor-mode run's steps so far ran on another BLAS kernel than
    this session's: results differ in their last bits between kernels. None if not."""
    now = kernels_of(env)
    before = set().union(*(kernels_of(e) for e in env['earlier']
                           if e.get('mode') == 'tensor'))  # (scalar mode: no BLAS)
    if cfg['mode'] != 'tensor' or not before - now:
        return None
    return (f"note: steps 1 to {step} ran on the BLAS kernel {'/'.join(sorted(before))}, the rest "
            f"run on {'/'.join(sorted(now)) or 'an unknown one'}: results differ in their last "
            "bits between kernels, so no one machine re-runs this record bit for bit "
            "(metrics.json names both)")
