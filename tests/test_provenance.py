"""provenance.py: what a record notes of where it came from: the code, the machine, the
BLAS kernel, the peak memory."""
import numpy as np

from microgpt_lab import provenance


def test_the_environment_notes_commit_versions_and_machine():
    env = provenance.environment(7, 'tensor', 'numpy+numba float32', provenance.now())
    assert env['seed'] == 7 and env['mode'] == 'tensor'
    assert len(env['commit']) == 40 and env['cores'] >= 1 and env['numpy'] and env['python']


def test_a_runs_peak_memory_is_its_own_after_a_reset():
    big = np.ones(300 * 2 ** 20 // 8)  # 300 MB, touched
    before = provenance.peak_memory_mb()
    del big
    provenance.reset_peak_memory()
    after = provenance.peak_memory_mb()
    assert before > 300 and 0 < after < before - 200


def test_a_pinned_blas_kernel_is_one_warning_line(monkeypatch):
    monkeypatch.setenv('OPENBLAS_CORETYPE', 'Haswell')
    line = provenance.kernel_pinned()
    assert line.startswith('warning: OPENBLAS_CORETYPE=Haswell') and '\n' not in line
    assert line.endswith('env -u OPENBLAS_CORETYPE') or 'env -u OPENBLAS_CORETYPE ' in line
    for v in provenance.KERNEL_PINS:
        monkeypatch.delenv(v, raising=False)
    assert provenance.kernel_pinned() is None
