"""bench.py: the contenders timed side by side, the table and its ratios, which say how
many times faster tensor mode is; a PyTorch that fails is a one-line error."""
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

import cli
import data
from microgpt_lab import bench, efficiency, tokens
from conftest import ROOT, main_output, one_line_error


def test_bench_times_both_modes_side_by_side_and_saves_the_table(small):
    code, out, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--bench-steps', '3',
                                 '--warmup', '1', '--repeats', '2', '--n-embd', '8', '--n-head', '2',
                                 '--batch-size', '4', '--threads', '64', '--out', small / 'bench')
    assert code == 0, err
    result = json.loads((small / 'bench' / 'bench.json').read_text())
    assert [(r['mode'], r['batch_size']) for r in result['results']] == \
        [('scalar', 1), ('tensor', 1), ('tensor', 4)]
    for r in result['results']:
        assert r['steps_per_s_range'][0] <= r['steps_per_s'] <= r['steps_per_s_range'][1]
    assert set(result['ratios']) == {'tensor batch 1 / scalar, tokens/s',
                                     'tensor batch 4 / scalar, tokens/s'}
    for key in ('cpu', 'cores', 'threads', 'numba_threads', 'python', 'numpy', 'numba', 'blas'):
        assert result['environment'][key] not in (None, '')
    assert result['environment']['numba_threads'] <= 64 and result['compile_s'] >= 0
    assert (small / 'bench' / 'bench.md').read_text() in out
    assert sum(' steps/s ' in line for line in out.splitlines() if line.startswith('repeat ')) == 6  # 2 x 3, taking turns,
    assert out.count('matmul peak at the shapes of the model, batch') == 4  # and each batch's peak
    assert set(result['matmul_peak_gflops_per_s']) == {'1', '4'}
    for r in result['results']:
        peak = result['matmul_peak_gflops_per_s'][str(r['batch_size'])]
        assert r['share_of_peak'] == pytest.approx(r['gflops_per_s'] / peak) and peak > 0
    pinned = 'OPENBLAS_CORETYPE' in os.environ  # as on this project's machines: one warning line
    assert out.count('warning: OPENBLAS_CORETYPE=') == pinned and ('kernel_pinned' in result['environment'])


@pytest.mark.parametrize('mode', ['scalar', 'tensor'])
def test_a_timed_run_counts_the_tokens_of_its_timed_steps_only(mode):
    docs = [[5, 0, 5], [5, 1, 1, 1, 5], [5, 2, 2, 5], [5, 0, 1, 2, 3, 4, 0, 5], [5, 3, 5], [5, 4, 4, 5]]
    cfg = cli.parse_config(cli.parse_args(['bench', '--n-embd', '8', '--n-head', '2']))
    d = tokens.RunData(data.Tokenizer('abcde'), docs, val=docs[:1], check=docs[:1], sizes='')
    steps_per_s, tokens_per_s, peak_mb = bench.time_ours(cfg, mode, 1, d, steps=3, warmup=2)
    assert tokens_per_s / steps_per_s * 3 == pytest.approx(sum(len(d) - 1 for d in docs[2:5]))


def test_medians_and_ranges_of_the_repeats():
    rows = bench.summarize({('tensor', 4): [(10, 100, 50), (30, 300, 70), (20, 200, 60)],
                            ('reference', 1): [(1, 10, None)]})
    assert rows == [dict(mode='tensor', batch_size=4, steps_per_s=20, steps_per_s_range=[10, 30],
                         tokens_per_s=200, tokens_per_s_range=[100, 300], peak_memory_mb=70),
                    dict(mode='reference', batch_size=1, steps_per_s=1, steps_per_s_range=[1, 1],
                         tokens_per_s=10, tokens_per_s_range=[10, 10], peak_memory_mb=None)]


def test_ratios_say_how_many_times_faster_tensor_mode_is():
    rows = [dict(mode='scalar', batch_size=1, tokens_per_s=100.0),
            dict(mode='tensor', batch_size=1, tokens_per_s=1000.0),
            dict(mode='tensor', batch_size=8, tokens_per_s=5000.0),
            dict(mode='torch', batch_size=1, tokens_per_s=500.0),
            dict(mode='torch', batch_size=8, tokens_per_s=10000.0)]
    assert bench.ratios(rows, [1, 8]) == {
        'tensor batch 1 / scalar, tokens/s': 10.0, 'tensor batch 8 / scalar, tokens/s': 50.0,
        'tensor / torch at batch 1, tokens/s': 2.0, 'tensor / torch at batch 8, tokens/s': 0.5}


@pytest.mark.parametrize('script, message', [
    ('#!/bin/sh\nexit 0\n', 'failed: no output'),
    ('#!/bin/sh\necho not json\n', 'failed: not json'),
    ('#!/bin/sh\necho "Traceback" >&2\necho "ModuleNotFoundError: torch" >&2\nexit 1\n',
     'failed: ModuleNotFoundError: torch'),
])
def test_a_torch_that_fails_is_a_one_line_error_and_leaves_no_folder(small, monkeypatch, script, message):
    fake = small / 'fake-python'
    fake.write_text(script)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(bench, 'TORCH_REF', str(small / 'docs.txt'))  # any file: it exists
    code, out, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--no-scalar',
                                 '--bench-steps', '1', '--warmup', '0', '--repeats', '1',
                                 '--n-embd', '8', '--n-head', '2', '--torch', fake, '--out', 'b')
    assert code == 1 and one_line_error(err) and message in err, err
    assert not (small / 'b').exists() and 'repeat' not in out and 'warm-up' not in out  # before any timing


def test_torch_options_that_cannot_work_are_refused(small, monkeypatch):
    monkeypatch.setattr(bench, 'TORCH_REF', str(small / 'docs.txt'))  # present, whatever the clone
    for torch, message in (('', "--torch : no such program"), ('no-such-python', 'no such program')):
        code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--torch', torch)
        assert code == 1 and one_line_error(err) and message in err, err
    monkeypatch.setattr(bench, 'TORCH_REF', str(small / 'nowhere' / 'torch_ref.py'))
    code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--torch', sys.executable)
    assert code == 1 and one_line_error(err) and 'torch_ref.py beside the project' in err, err


def fake_reference(every=1):
    """A script that stands in for the saved gist: a step each 2 ms, a line each `every`."""
    return f"""import time
for step in range(1000):
    time.sleep(0.002)
    if (step + 1) % {every} == 0:
        print(f"step {{step + 1:4d}} / 1000 | loss 3.0000")
"""


FAKE_REFERENCE = fake_reference()


# every 10: no line of step 5 (the warm-up's last), nor of 25: timed from step 10 to 30
@pytest.mark.parametrize('every, warmup', [(1, 2), (10, 5)])
def test_the_reference_script_is_timed_between_its_step_lines(small, every, warmup):
    (small / 'reference.py').write_text(fake_reference(every))
    code, out, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--reference',
                                 'reference.py', '--bench-steps', '20', '--warmup', str(warmup),
                                 '--repeats', '1', '--out', 'b')
    assert code == 0, err
    result = json.loads((small / 'b' / 'bench.json').read_text())
    reference = next(r for r in result['results'] if r['mode'] == 'reference')
    assert 100 < reference['steps_per_s'] < 500  # one step per 2 ms, and a little more
    assert 'scalar / reference, tokens/s' in result['ratios']


@pytest.mark.parametrize('args, message', [
    (['--reference', 'reference.py', '--n-embd', '8', '--n-head', '2'], 'needs the reference config'),
    (['--reference', 'reference.py', '--warmup', '0'], '--warmup must be >= 1'),
    (['--reference', 'reference.py', '--bench-steps', '1000'], '--bench-steps <= 1000'),
    (['--reference', 'nowhere.py'], 'no such file'),
])
def test_reference_settings_that_cannot_compare_are_refused(small, args, message):
    (small / 'reference.py').write_text(FAKE_REFERENCE)
    code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', *args)
    assert code == 1 and one_line_error(err) and message in err, err


def test_bench_times_text_windows_in_tensor_mode(small):
    (small / 'text.txt').write_text("Now is the winter of our discontent\n" * 30)
    code, out, err = main_output(cli.main, 'bench', '--data', 'text.txt', '--data-format', 'text',
                                 '--bench-steps', '3', '--warmup', '1', '--repeats', '1',
                                 '--n-embd', '8', '--n-head', '2', '--block-size', '8',
                                 '--batch-size', '4', '--out', 'b')
    assert code == 0, err
    result = json.loads((small / 'b' / 'bench.json').read_text())
    assert [(r['mode'], r['batch_size']) for r in result['results']] == [('tensor', 1), ('tensor', 4)]
    r = result['results'][1]
    assert r['tokens_per_s'] / r['steps_per_s'] == pytest.approx(4 * 8)  # B windows of T a step
    assert result['config']['data_format'] == 'text' and 'scalar mode trains on documents only' in out


def test_bench_stopped_by_sigterm_leaves_no_folder(small):
    p = subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), 'bench', '--data', 'docs.txt',
                          '--bench-steps', '100000', '--warmup', '1', '--no-scalar', '--n-embd',
                          '8', '--n-head', '2', '--out', 'b'], cwd=small, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in p.stdout:
        if line.startswith('warm-up'):
            break
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143 and 'Traceback' not in err and err.strip() == 'SIGTERM', err
    assert not (small / 'b').exists()  # neither an empty folder nor a claim stays


def test_bench_times_each_varied_choice_alone_against_the_reference_blocks(small):
    code, out, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--bench-steps', '2',
                                 '--warmup', '1', '--repeats', '1', '--n-embd', '8', '--n-head', '2',
                                 '--batch-size', '4', '--no-scalar', '--vary', 'norm=layernorm',
                                 '--vary', 'position=rope,none', '--out', small / 'bench')
    assert code == 0, err
    result = json.loads((small / 'bench' / 'bench.json').read_text())
    assert [(r['mode'], r['batch_size']) for r in result['results']] == [
        ('tensor', 1), ('tensor', 4), ('tensor norm=layernorm', 4), ('tensor position=rope', 4),
        ('tensor position=none', 4)]
    assert result['ratios']['tensor position=rope / tensor at batch 4, tokens/s'] > 0
    assert '**' in (small / 'bench' / 'bench.md').read_text().split('position=none / tensor')[1]
    code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--vary', 'position=rope',
                               '--n-embd', '6', '--n-head', '2', '--out', small / 'odd')
    assert code == 1 and 'must be even' in err and not (small / 'odd').exists()
    for args, message in ((['--vary', 'mode=scalar,tensor'], 'takes the model'),
                          (['--vary', 'batch-size=1,8'], 'not --batch-size'),
                          (['--vary', 'dropout=0,0.1'], 'give --no-scalar')):
        code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', *args, '--out', small / 'x')
        assert code == 1 and one_line_error(err) and message in err, err


def test_scale_times_each_size_in_both_and_takes_each_process_own_peak_memory(small, monkeypatch):
    """--vary over a model's sizes: each size in tensor mode and in PyTorch (here a stand-in
    that holds n_embd * 2 MB), a scale table and its picture; PyTorch's peak memory is its
    own process's."""
    fake = small / 'fake_torch_ref.py'
    fake.write_text("import json, sys\na = sys.argv\nn = int(a[a.index('--n-embd') + 1])\n"
                    "held = bytearray(n * 2 ** 21)\nheld[::4096] = b'x' * len(held[::4096])\n"
                    "print(json.dumps(dict(steps_per_s=1.0, tokens_per_s=100.0 * n)))\n")
    monkeypatch.setattr(bench, 'TORCH_REF', str(fake))
    code, out, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--no-scalar',
                                 '--bench-steps', '2', '--warmup', '1', '--repeats', '1',
                                 '--n-embd', '8', '--n-head', '2', '--batch-size', '4',
                                 '--vary', 'n-embd=8,16,32', '--vary', 'block-size=8',
                                 '--torch', sys.executable, '--out', 'scale')
    assert code == 0, err
    result = json.loads((small / 'scale' / 'bench.json').read_text())
    rows = {r['mode']: r for r in result['results'] if r['batch_size'] == 4}
    assert set(rows) == {'tensor', 'torch', 'tensor n-embd=16', 'torch n-embd=16', 'tensor n-embd=32',
                         'torch n-embd=32', 'tensor block-size=8', 'torch block-size=8'}
    assert rows['torch n-embd=32']['tokens_per_s'] == 3200
    assert rows['torch n-embd=32']['peak_memory_mb'] - rows['torch']['peak_memory_mb'] > 40  # 48 MB more
    assert rows['tensor n-embd=32']['num_params'] > rows['tensor']['num_params']
    assert rows['tensor n-embd=32']['flops_per_token'] > rows['tensor']['flops_per_token']
    assert result['ratios']['tensor n-embd=16 / torch n-embd=16 at batch 4, tokens/s'] == \
        pytest.approx(rows['tensor n-embd=16']['tokens_per_s'] / 1600)
    table = (small / 'scale' / 'bench.md').read_text().split('Scale:')[1]
    assert [line.split(' | ')[:2] for line in table.splitlines() if line.startswith('| n_embd') or
            line.startswith('| block_size')] == [['| n_embd', '8'], ['| n_embd', '16'], ['| n_embd', '32'],
                                                     ['| block_size', '8'], ['| block_size', '16']]
    assert (small / 'scale' / 'scale.png').read_bytes()[:4] == b'\x89PNG'


def test_scaling_times_ours_and_pytorch_at_each_thread_count_the_machine_has(small, monkeypatch):
    """--vary threads: each count (up to the cores) in tensor mode and in PyTorch (here a
    stand-in whose speed is its --threads), a scaling table and its picture."""
    fake = small / 'fake_torch_ref.py'
    fake.write_text("import json, sys\na = sys.argv\nn = int(a[a.index('--threads') + 1])\n"
                    "print(json.dumps(dict(steps_per_s=1.0, tokens_per_s=100.0 * n)))\n")
    monkeypatch.setattr(bench, 'TORCH_REF', str(fake))
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    code, out, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--no-scalar',
                                 '--bench-steps', '2', '--warmup', '1', '--repeats', '1',
                                 '--n-embd', '8', '--n-head', '2', '--batch-size', '4', '--threads', '2',
                                 '--vary', 'threads=1,2,4,8', '--torch', sys.executable, '--out', 'scaling')
    assert code == 0, err
    assert 'threads=4,8 left out: this machine has 2 cores' in out
    result = json.loads((small / 'scaling' / 'bench.json').read_text())
    rows = {r['mode']: r for r in result['results'] if r['batch_size'] == 4}
    assert set(rows) == {'tensor', 'torch', 'tensor threads=1', 'torch threads=1'}
    assert (rows['torch threads=1']['tokens_per_s'], rows['torch']['tokens_per_s']) == (100, 200)
    assert result['vary'] == [['threads', [1, 2]]]
    assert [p['num_threads'] for p in result['environment']['thread_pools']
            if p['user_api'] in ('blas', 'numba')] == [2, 2]  # the base's count, not the last run's
    table = (small / 'scaling' / 'bench.md').read_text().split('Scaling:')[1]
    lines = [line.split(' | ') for line in table.splitlines() if line[:4] in ('| 1 ', '| 2 ')]
    assert [(l[0], l[2], l[-1]) for l in lines] == [('| 1', '100', '1.00× |'), ('| 2', '200', '2.00× |')]
    assert (small / 'scaling' / 'scaling.png').read_bytes()[:4] == b'\x89PNG'
    for args, message in ((['--vary', 'threads=4,8'], 'give counts up to 2'),
                          (['--vary', 'threads+n-embd=1+8,2+16'], 'the thread counts alone'),
                          (['--vary', 'threads=auto,2'], 'not auto')):
        code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', *args)
        assert code == 1 and one_line_error(err) and message in err, err


def test_a_share_of_the_peak_above_100_percent_is_measured_again_or_not_given():
    rows = [dict(mode='torch', batch_size=4, gflops_per_s=90.0),  # before the row that re-measures
            dict(mode='tensor', batch_size=4, gflops_per_s=150.0),
            dict(mode='tensor n-embd=32', batch_size=4, gflops_per_s=150.0)]
    again = []
    measure_again = lambda key: again.append(key) or {'': 120.0, 'n-embd=32': 200.0}[key[0]]
    notes = efficiency.shares(rows, {('', 4): 100.0, ('n-embd=32', 4): 100.0}, measure_again)
    assert again == [('', 4), ('n-embd=32', 4)]  # each peak once, before any share
    assert [r['share_of_peak'] for r in rows] == [0.75, None, 0.75]  # the torch row: the new peak
    assert rows[0]['matmul_peak_gflops_per_s'] == rows[1]['matmul_peak_gflops_per_s'] == 120.0
    assert len(notes) == 1 and notes[0].startswith('tensor at batch 4: its share of the matmul peak is not credible')
    for r in rows:
        r.update(steps_per_s=1.0, steps_per_s_range=[1.0, 1.0], tokens_per_s=1.0, tokens_per_s_range=[1.0, 1.0])
    md = bench.markdown(rows, {}, 0.0, notes=notes)
    assert '| not credible |' in md and '%' not in md.splitlines()[3] and notes[0] in md


def test_a_setting_a_recipe_set_is_named_as_the_recipe_that_set_it(small):
    code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--recipe', 'nanochat')
    assert code == 1 and one_line_error(err), err
    assert "bench with --recipe nanochat's --optimizer: scalar mode has no optimizer" in err
    code, _, err = main_output(cli.main, 'bench', '--data', 'docs.txt', '--optimizer', 'muon')
    assert code == 1 and 'bench with --optimizer: scalar mode' in err  # given: named as given
