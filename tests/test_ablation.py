"""ablation.py: an ablation's intervals recomputed from its run records, parallel runs giving the same results, resuming, and interruption."""
import csv
import errno
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pytest

import cli
from microgpt_lab import UserError, ablation, grid, models, plots, provenance, records, stats
from conftest import DOCS, ROOT, main_output, one_line_error

VARIANTS = list(grid.VARIANT_NAMES.values())  # untied-norm, tied-norm, untied-nonorm, tied-nonorm


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """A finished small ablation, made once for the tests that only read or damage it (each
    a copy)."""
    folder = tmp_path_factory.mktemp('finished')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    assert ablate(folder / 'abl', '--jobs', '1', data=folder / 'docs.txt')[0] == 0
    return folder / 'abl'


def ablate(out, *extra, data='docs.txt'):
    """cli.main(['ablate', ...]) of a tiny model on docs.txt; --n-embd and --steps in extra
    override the defaults."""
    options = {'--steps': '6', '--n-embd': '8'}
    extra = list(extra)
    for opt in options:
        if opt in extra:
            options[opt] = extra.pop(extra.index(opt) + 1)
            extra.remove(opt)
    return main_output(cli.main, 'ablate', '--data', data, '--samples', '4', '--n-head', '2',
                       '--out', out, *(x for kv in options.items() for x in kv), *extra)


def test_an_ablations_intervals_recomputed_from_its_run_records(small):
    code, printed, err = ablate(small / 'abl', '--seeds', '3', '--jobs', '1', '--variants',
                                'untied-norm,tied-nonorm')
    assert code == 0, err
    runs = sorted(p.name for p in (small / 'abl' / 'runs').iterdir())
    assert runs == sorted(f"{v}-seed{s}" for v in VARIANTS[::3] for s in (42, 43, 44))
    val = {(v, s): json.loads((small / 'abl' / 'runs' / f"{v}-seed{s}" / 'metrics.json')
                              .read_text())['val_loss'] for v in VARIANTS[::3] for s in (42, 43, 44)}
    summary = json.loads((small / 'abl' / 'summary.json').read_text())
    for row in summary['variants'][1:]:
        diffs = [val[(row['variant'], s)] - val[('untied-norm', s)] for s in (42, 43, 44)]
        mean, sd = sum(diffs) / 3, math.sqrt(sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2)
        half = 4.303 * sd / math.sqrt(3)  # t of 2 degrees of freedom, from the table
        d = row['val_delta']
        assert d['mean'] == pytest.approx(mean, rel=1e-12) and d['n'] == 3
        assert d['high'] - d['mean'] == pytest.approx(half, rel=2e-4)
        assert d['mean'] - d['low'] == pytest.approx(half, rel=2e-4)
        assert row['val_loss'][0] == pytest.approx(statistics.fmean(val[(row['variant'], s)]
                                                                    for s in (42, 43, 44)))
    rows = list(csv.DictReader(open(small / 'abl' / 'summary.csv')))
    assert len(rows) == 6 and {r['status'] for r in rows} == {'completed'}
    table = (small / 'abl' / 'table.md').read_text()
    assert table in printed and '(reference)' in table and '±' in table


def test_scalar_ablation_results_do_not_depend_on_jobs(small):
    assert ablate(small / 'one', '--jobs', '1', '--variants', 'untied-norm,tied-norm')[0] == 0
    assert ablate(small / 'two', '--jobs', '2', '--variants', 'untied-norm,tied-norm')[0] == 0
    for v in VARIANTS[:2]:
        run = f"runs/{v}-seed42/losses.csv"
        assert (small / 'one' / run).read_text() == (small / 'two' / run).read_text()


def test_ablation_resume_skips_finished_runs(small):
    assert ablate(small / 'abl', '--jobs', '1')[0] == 0
    finished = small / 'abl' / 'runs' / 'untied-norm-seed42' / 'metrics.json'
    stamp = finished.read_text()
    unfinished = small / 'abl' / 'runs' / 'tied-nonorm-seed42'
    shutil.rmtree(unfinished)  # as if Ctrl-C had stopped the ablation before this run
    code, out, _ = main_output(cli.main, 'ablate', '--resume', small / 'abl', '--jobs', '1')
    assert code == 0 and '3 runs done, 1 to go' in out
    assert finished.read_text() == stamp and (unfinished / 'metrics.json').exists()


def test_ablation_resume_refuses_changed_data(small):
    assert ablate(small / 'abl', '--jobs', '1')[0] == 0
    shutil.rmtree(small / 'abl' / 'runs' / 'tied-norm-seed42')
    (small / 'docs.txt').write_text('\n'.join(DOCS[:6]) + '\n')
    code, _, err = main_output(cli.main, 'ablate', '--resume', small / 'abl')
    assert code == 1 and one_line_error(err) and 'has changed' in err


@pytest.mark.parametrize('change, message', [
    (lambda a: a.pop('seeds'), 'ablation.json: seeds is missing'),
    (lambda a: a.update(seeds=[]), 'seeds = [] is not a list of seeds'),
    (lambda a: a.update(seeds=3), 'seeds = 3'),
    (lambda a: a.update(config=[]), 'config = [] is not dict'),
    (lambda a: a['config'].pop('steps'), 'config steps is missing'),
    (lambda a: a['config'].update(lr=-1), 'config lr must be > 0'),
    (lambda a: a.pop('data_sha256'), 'data_sha256 is missing'),
    (lambda a: a['config'].update(jobs=2 ** 40), 'is not a count up to 1024'),
])
def test_ablation_resume_checks_its_plan(small, finished, change, message):
    shutil.copytree(finished, small / 'abl')
    path = small / 'abl' / 'ablation.json'
    plan = json.loads(path.read_text())
    change(plan)
    path.write_text(json.dumps(plan))
    code, _, err = main_output(cli.main, 'ablate', '--resume', small / 'abl')
    assert code == 1 and one_line_error(err) and message in err, err


def test_a_damaged_run_record_is_run_again_on_resume_and_says_why(small, finished):
    shutil.copytree(finished, small / 'abl')
    run = small / 'abl' / 'runs' / 'tied-norm-seed42'
    losses = (run / 'losses.csv').read_text()
    (run / 'metrics.json').write_text('[]')
    code, out, err = main_output(cli.main, 'ablate', '--resume', small / 'abl', '--jobs', '1')
    assert code == 0 and '3 runs done, 1 to go' in out and (run / 'losses.csv').read_text() == losses
    assert 'tied-norm-seed42 cannot be used' in err and 'should hold a JSON object' in err


def test_a_finished_run_by_other_settings_than_the_plans_is_refused(small, finished):
    shutil.copytree(finished, small / 'abl')
    config = small / 'abl' / 'runs' / 'tied-norm-seed42' / 'config.json'
    config.write_text(config.read_text().replace('"lr": 0.01', '"lr": 0.02'))
    code, out, err = main_output(cli.main, 'ablate', '--resume', small / 'abl', '--jobs', '1')
    assert code == 1 and one_line_error(err) and 'lr is 0.02' in err and 'plan says 0.01' in err


def test_a_ctrl_c_as_a_run_starts_stops_the_ablation_after_its_first_step(small, monkeypatch):
    # --jobs 1: the signal reaches the ablation before its run catches signals itself
    assert ablate(small / 'abl', '--jobs', '1', '--steps', '50')[0] == 0
    shutil.rmtree(small / 'abl' / 'runs')
    plan = grid.read_plan(str(small / 'abl'))
    parse, caught = ablation.data.parse, []

    def parse_then_signal(*args, **kwargs):  # Ctrl-C while the run reads its data
        caught.append(signal.SIGINT)
        return parse(*args, **kwargs)
    monkeypatch.setattr(ablation.data, 'parse', parse_then_signal)
    code = ablation.run_all(*plan, str(small / 'abl'), 1, caught)
    runs = sorted((small / 'abl' / 'runs').iterdir())
    assert code == 130 and [r.name for r in runs] == ['untied-norm-seed42']  # the rest skipped
    assert json.loads((runs[0] / 'metrics.json').read_text())['steps'] < 50


def test_a_full_disk_names_every_record_it_saved_elsewhere(small, monkeypatch):
    assert ablate(small / 'abl', '--jobs', '1', '--variants', 'untied-norm,tied-norm')[0] == 0
    shutil.rmtree(small / 'abl' / 'runs')
    base, seeds, axes = grid.read_plan(str(small / 'abl'))
    _, todo = ablation.runs_to_go(base, seeds, grid.cells(axes), str(small / 'abl'))
    write = records.write_atomic

    def no_space(path, text):  # the disk fills as the runs write their records
        if path.endswith('losses.csv') and f"{os.sep}runs{os.sep}" in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(path, text)
    monkeypatch.setattr(records, 'write_atomic', no_space)
    workers = ablation.Local(2, 1, str(small / 'abl'), [])
    workers.executor = ablation.Here()  # two runs under way at once, in this process
    failure = ablation.execute(workers, todo, ablation.data.read_bytes(base['data']), [], lambda *_: None)
    saved = re.findall(r'saved to (\S+) instead', failure)
    assert len(saved) == 2 and all(os.path.exists(os.path.join(s, 'metrics.json')) for s in saved), failure
    for folder in saved:
        shutil.rmtree(folder)


def test_a_vary_of_auto_threads_is_refused(small):
    code, _, err = ablate(small / 'g', '--mode', 'tensor', '--vary', 'threads=auto,1')
    assert code == 1 and one_line_error(err) and 'threads=auto' in err


def test_an_ablation_without_validation_documents_is_refused_before_it_starts(small):
    (small / 'one.txt').write_text('anna\n')
    code, _, err = ablate(small / 'abl', data='one.txt')
    assert code == 1 and one_line_error(err) and 'ablate needs validation data' in err
    assert not (small / 'abl').exists()
    (small / 'text.txt').write_text('to be or not to be\n' * 20)
    code, _, err = ablate(small / 'abl', '--mode', 'tensor', '--data-format', 'text',
                          '--val-fraction', '0', data='text.txt')
    assert code == 1 and one_line_error(err) and 'ablate needs validation data' in err
    assert not (small / 'abl').exists()


def test_diverged_runs_are_left_out_and_said(small):
    code, out, err = main_output(cli.main, 'ablate', '--data', 'docs.txt', '--steps', '100',
                                 '--lr', '1000', '--n-embd', '8', '--n-head', '2', '--jobs', '1',
                                 '--out', small / 'abl')
    assert code == 2 and one_line_error(err) and 'runs diverged' in err, err
    assert err.rstrip().endswith('try a lower --lr or --init-std')  # train's own hint, for its cell
    summary = json.loads((small / 'abl' / 'summary.json').read_text())
    assert sum(v['diverged'] for v in summary['variants']) >= 1
    assert 'diverged and are left out' in (small / 'abl' / 'table.md').read_text()


def test_a_cell_whose_runs_all_diverge_has_no_figures_and_the_others_keep_theirs(small):
    code, _, err = ablate(small / 'g', '--mode', 'tensor', '--batch-size', '4', '--seeds', '2',
                          '--variants', 'untied-norm', '--vary', 'lr=0.01,1e30', '--jobs', '1')
    assert code == 2 and 'runs diverged' in err, err
    cells = json.loads((small / 'g' / 'summary.json').read_text())['variants']
    assert [c['diverged'] for c in cells] == [0, 2]
    for key in ('final_loss', 'mean_loss_last_n', 'val_loss', 'steps_per_s', 'tokens_per_s'):
        assert cells[1][key] == [None, None] and cells[0][key][0] is not None
    assert cells[1]['val_delta'] is None
    table = (small / 'g' / 'table.md').read_text()
    assert table.splitlines()[3].startswith('| 1e+30 | n/a | n/a (needs ≥ 2 paired seeds) | n/a |')
    assert 'The reference: untied-norm, lr=0.01. Every cell: untied-norm, ' in table  # one variant: no column


def test_cells_of_different_lengths_each_say_over_how_many_steps_their_mean_runs(small):
    assert ablate(small / 'g', '--variants', 'untied-norm', '--vary', 'steps=6,4', '--last-n', '5',
                  '--jobs', '1', '--seeds', '2')[0] == 0
    lines = (small / 'g' / 'table.md').read_text().splitlines()
    assert '| mean loss, last N |' in lines[0]
    assert ' (N=5) |' in lines[2] and ' (N=4) |' in lines[3]


def test_ctrl_c_during_an_ablation_keeps_finished_runs_and_says_how_to_resume(small):
    p = subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), 'ablate', '--data', 'docs.txt',
                          '--mode', 'tensor', '--steps', '30000', '--n-embd', '8', '--n-head', '2',
                          '--jobs', '2', '--samples', '0', '--out', 'abl'], cwd=small, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until_training(small / 'abl', RUNS)  # the first two runs are training
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'Traceback' not in err
    assert 'cli.py ablate --resume abl' in out
    statuses = {d.name: json.loads((d / 'metrics.json').read_text())['status']
                for d in (small / 'abl' / 'runs').iterdir() if (d / 'metrics.json').exists()}
    assert statuses and set(statuses.values()) <= {'completed', 'interrupted'}
    assert len(statuses) < 4  # the queued runs did not start
    assert not (small / 'abl' / '.running').exists()


def start_ablation(cwd, *extra):
    """In a session of its own, as a terminal's job is: a signal to its group reaches every
    process of it, the workers and multiprocessing's helpers too."""
    return subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), 'ablate', '--data', 'docs.txt',
                             '--mode', 'tensor', '--n-embd', '8', '--n-head', '2', '--samples', '3',
                             '--jobs', '2', '--out', 'abl', *extra], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def wait_until_training(abl, runs, steps=50):
    """Until each of the runs has printed a step line past `steps` in its train.log."""
    deadline = time.time() + 120
    while time.time() < deadline:
        logs = [abl / 'runs' / r / 'train.log' for r in runs]
        if all(log.exists() and re.search(rf'^step +\d{{{len(str(steps)) + 1},}} /', log.read_text(), re.M)
               for log in logs):
            return
        time.sleep(0.05)
    raise AssertionError('the runs did not start training')


GRID = ('--variants', 'untied-norm,tied-norm', '--steps', '2000', '--log-every', '10')
RUNS = ('untied-norm-seed42', 'tied-norm-seed42')


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
    """The grid of the interruption tests, run without interruption."""
    folder = tmp_path_factory.mktemp('whole')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    p = start_ablation(folder, *GRID)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return folder / 'abl'


def test_an_interrupted_ablation_continues_its_runs_from_their_checkpoints(small, whole):
    p = start_ablation(small, *GRID)
    wait_until_training(small / 'abl', RUNS)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143 and 'Traceback' not in err, err
    steps = {r: json.loads((small / 'abl' / 'runs' / r / 'metrics.json').read_text())['steps']
             for r in RUNS}
    assert all(0 < n < 2000 for n in steps.values())  # stopped midway, with their checkpoints
    # a run an ablation made is a run record like any other: it resumes alone, and re-runs
    stopped = small / 'abl' / 'runs' / RUNS[1]
    assert cli.main(['train', '--resume', str(stopped), '--out', str(small / 'alone')]) == 0
    assert (small / 'alone' / 'losses.csv').read_text() == \
        (whole / 'runs' / RUNS[1] / 'losses.csv').read_text()
    code, out, err = main_output(cli.main, 'ablate', '--resume', small / 'abl')
    assert code == 0, err
    assert '0 runs done, 2 to go (2 continued from their checkpoints)' in out
    assert re.findall(r'^\[ ?(\d)/2\]', out, re.M) == ['1', '2']
    for r in RUNS:  # the same losses as the ablation that was never stopped
        assert (small / 'abl' / 'runs' / r / 'losses.csv').read_text() == \
            (whole / 'runs' / r / 'losses.csv').read_text()
        assert (small / 'abl' / 'runs' / r / 'samples.txt').read_text() == \
            (whole / 'runs' / r / 'samples.txt').read_text()
    # and a train of the same settings (threads included) gives the ablation's losses
    assert cli.main(['train', '--from', str(whole / 'runs' / RUNS[0]), '--out', str(small / 'solo')]) == 0
    assert (small / 'solo' / 'losses.csv').read_text() == \
        (whole / 'runs' / RUNS[0] / 'losses.csv').read_text()


def test_a_dropped_terminal_stops_an_ablation_as_sigterm_does(small):
    p = start_ablation(small, *GRID)
    wait_until_training(small / 'abl', RUNS)
    os.killpg(p.pid, signal.SIGHUP)  # the hangup reaches the whole process group
    out, err = p.communicate(timeout=120)
    assert p.returncode == 129 and err == '', err  # no process of the group dies noisily
    assert {json.loads((small / 'abl' / 'runs' / r / 'metrics.json').read_text())['status']
            for r in RUNS} == {'interrupted'}


def test_a_worker_killed_mid_run_is_one_line_and_the_ablation_resumes(small, whole):
    p = start_ablation(small, *GRID)
    wait_until_training(small / 'abl', RUNS)
    claim = small / 'abl' / 'runs' / RUNS[0] / '.running'
    os.kill(int(claim.read_text().split()[0]), signal.SIGKILL)  # as the OOM killer does
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1 and one_line_error(err) and 'a worker process died' in err, err
    assert 'ablate --resume abl' in err
    code, out, err = main_output(cli.main, 'ablate', '--resume', small / 'abl')
    assert code == 0, err
    # the killed run starts anew; the other continues from its checkpoint, or had finished
    assert re.search(r'0 runs done, 2 to go \(1 continued from their checkpoints\)|'
                     r'1 runs done, 1 to go,', out), out
    for r in RUNS:
        assert (small / 'abl' / 'runs' / r / 'losses.csv').read_text() == \
            (whole / 'runs' / r / 'losses.csv').read_text()


def test_a_ctrl_c_while_the_workers_start_is_one_line_and_resumes(small):
    p = start_ablation(small, '--steps', '50')
    for line in p.stdout:
        if line.startswith('ablation: '):
            break
    p.send_signal(signal.SIGINT)  # as the workers start up: they ignore it, their parent stops
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'Traceback' not in err and err == '', err
    assert main_output(cli.main, 'ablate', '--resume', small / 'abl')[0] == 0


def test_a_grid_of_many_single_values_has_run_names_that_fit(small):
    values = ('lr=0.01', 'beta1=0.85', 'beta2=0.99', 'last-n=100', 'samples=4', 'temperature=0.5',
              'init-std=0.08', 'eval-every=0', 'n-layer=1', 'block-size=16', 'steps=6')
    code, out, err = ablate(small / 'g', '--variants', 'untied-norm', '--jobs', '1',
                            *(x for v in values for x in ('--vary', v)))
    assert code == 0, err
    (run,) = (small / 'g' / 'runs').iterdir()
    assert len(run.name) <= grid.MAX_NAME + len('-seed42') and run.name.endswith('-seed42')
    assert run.name.startswith('untied-norm-lr=0.01-beta1=0.85')
    variant = ((grid.VARIANT_AXIS, (False, True)),)
    assert grid.cell_name(variant + (('lr', 0.01),) * 20, 'folder') != \
        grid.cell_name(variant + (('lr', 0.02),) * 20, 'folder')  # still one a cell


def test_the_header_shows_the_steps_of_every_cell(small):
    code, out, _ = ablate(small / 'g', '--variants', 'untied-norm', '--jobs', '1',
                          '--vary', 'steps=4,6')
    assert code == 0 and '2 variants' not in out and ', 4/6 steps,' in out


def test_varying_mode_needs_one_validation_set_and_then_the_modes_agree(small):
    code, _, err = ablate(small / 'g', '--variants', 'untied-norm', '--vary', 'mode=scalar,tensor')
    assert code == 1 and one_line_error(err) and 'different validation sets' in err
    assert not (small / 'g').exists()
    code, out, err = ablate(small / 'g', '--variants', 'untied-norm', '--vary', 'mode=scalar,tensor',
                            '--val-docs', '2', '--jobs', '1')
    assert code == 0, err
    runs = {m: json.loads((small / 'g' / 'runs' / f'untied-norm-mode={m}-seed42' / 'metrics.json')
                          .read_text()) for m in ('scalar', 'tensor')}
    config = json.loads((small / 'g' / 'runs' / 'untied-norm-mode=tensor-seed42' / 'config.json')
                        .read_text())
    assert (config['batch_size'], config['dtype']) == (1, 'float64')  # as scalar mode runs
    assert runs['tensor']['val_loss'] == pytest.approx(runs['scalar']['val_loss'], abs=1e-12)


def test_the_memory_check_counts_the_runs_at_once():
    cfg = dict(mode='tensor', n_embd=512, n_layer=8, n_head=8, batch_size=64, block_size=256,
               dtype='float32', tie_lm_head=False)
    models.check_memory(cfg, 65, 10 ** 6)  # one fits
    with pytest.raises(UserError, match='1024 runs at once'):
        models.check_memory(cfg, 65, 10 ** 6, at_once=1024)


# ---------------------------------------------------------------------------
# Grids: --vary and --variants
def test_a_grid_crosses_variants_values_and_seeds_against_its_reference_cell(small, monkeypatch):
    drawn, draw = [], plots.intervals
    monkeypatch.setattr(plots, 'intervals', lambda path, rows, measure, title: drawn.append(rows) or draw(path, rows, measure, title))
    code, out, err = ablate(small / 'g', '--seeds', '2', '--jobs', '2', '--variants',
                            'tied-norm,untied-nonorm', '--vary', 'lr=0.02,0.005',
                            '--vary', 'n-head=1,2')
    assert code == 0, err
    runs = sorted(p.name for p in (small / 'g' / 'runs').iterdir())
    assert len(runs) == 2 * 2 * 2 * 2 and 'tied-norm-lr=0.02-n-head=1-seed42' in runs
    rows = list(csv.DictReader(open(small / 'g' / 'summary.csv')))
    assert {'lr', 'n_head'} <= set(rows[0]) and len(rows) == 16
    summary = json.loads((small / 'g' / 'summary.json').read_text())
    assert summary['reference'] == 'tied-norm lr=0.02 n-head=1' and summary['varied'] == ['lr', 'n_head']
    val = {(r['variant'], r['lr'], r['n_head'], r['seed']): float(r['val_loss']) for r in rows}
    for cell in summary['variants'][1:]:  # each against the reference, paired by seed
        diffs = [val[(cell['variant'], str(cell['lr']), str(cell['n_head']), str(s))] -
                 val[('tied-norm', '0.02', '1', str(s))] for s in (42, 43)]
        assert cell['val_delta']['mean'] == pytest.approx(sum(diffs) / 2)
        half = 12.706 * statistics.stdev(diffs) / math.sqrt(2)
        assert cell['val_delta']['high'] - cell['val_delta']['mean'] == pytest.approx(half, rel=1e-4)
    # intervals.png: a row a cell in the table's order, named by what it changes, with its interval
    (rows_drawn,) = drawn
    assert rows_drawn[0] == ('the reference', None)
    assert sorted(name for name, _ in rows_drawn[1:]) == sorted(
        ['n-head=2', 'lr=0.005', 'lr=0.005, n-head=2', 'untied-nonorm', 'untied-nonorm, n-head=2',
         'untied-nonorm, lr=0.005', 'untied-nonorm, lr=0.005, n-head=2'])
    assert [d for _, d in rows_drawn[1:]] == [(c['bpb_delta']['mean'], c['bpb_delta']['low'], c['bpb_delta']['high'])
                                              for c in summary['variants'][1:]]
    bpb = {(r['variant'], r['lr'], r['n_head'], r['seed']): float(r['val_bpb']) for r in rows}
    for cell in summary['variants'][1:]:  # in bits per byte
        assert cell['bpb_delta']['mean'] == pytest.approx(statistics.fmean(
            bpb[(cell['variant'], str(cell['lr']), str(cell['n_head']), str(s))] - bpb[('tied-norm', '0.02', '1', str(s))]
            for s in (42, 43)))
    assert (small / 'g' / 'intervals.png').read_bytes()[:4] == b'\x89PNG'
    table = (small / 'g' / 'table.md').read_text()
    assert table.count('\n| ') == 1 + 8 and '| lr | n-head |' in table
    config = json.loads((small / 'g' / 'runs' / 'untied-nonorm-lr=0.005-n-head=2-seed43' /
                         'config.json').read_text())
    assert (config['lr'], config['n_head'], config['seed'], config['tie_lm_head'],
            config['input_rmsnorm']) == (0.005, 2, 43, False, False)


def test_a_grid_gives_the_same_results_for_any_jobs_times_its_steps_alone_and_resumes(small):
    # at n_embd 64, 2 layers, OpenBLAS rounds a product's sums by its thread count, which
    # once followed --jobs: every run now has --threads (1 in an ablation) whatever --jobs
    grid = ('--vary', 'lr=0.02,0.005', '--variants', 'untied-norm,tied-norm', '--mode', 'tensor',
            '--n-embd', '64', '--n-layer', '2')
    assert ablate(small / 'one', '--jobs', '1', *grid)[0] == 0
    assert ablate(small / 'two', '--jobs', '2', *grid)[0] == 0
    for run in (small / 'one' / 'runs').iterdir():
        assert (run / 'losses.csv').read_text() == \
            (small / 'two' / 'runs' / run.name / 'losses.csv').read_text()
        m = json.loads((small / 'two' / 'runs' / run.name / 'metrics.json').read_text())
        assert m['warmup_s'] > 0 and m['steps_per_s'] == pytest.approx(6 / m['train_time_s'])
    shutil.rmtree(small / 'two' / 'runs' / 'tied-norm-lr=0.005-seed42')
    metrics = small / 'two' / 'runs' / 'untied-norm-lr=0.02-seed42' / 'metrics.json'
    m = json.loads(metrics.read_text())  # as if it had run on another machine's kernel
    m['environment']['thread_pools'] = [dict(user_api='blas', internal_api='openblas', architecture='Zen9')]
    metrics.write_text(json.dumps(m))
    code, out, err = main_output(cli.main, 'ablate', '--resume', small / 'two', '--jobs', '1')
    assert code == 0 and '3 runs done, 1 to go' in out
    assert 'note: 1 run of this ablation ran on the BLAS kernel Zen9, and the 1 run to go will run on ' in err
    summaries = [json.loads((small / d / 'summary.json').read_text()) for d in ('one', 'two')]
    assert [c['val_delta'] for c in summaries[0]['variants']] == \
        [c['val_delta'] for c in summaries[1]['variants']]
    assert summaries[1]['reference'] == 'untied-norm lr=0.02'


# Grids that cannot run: the options (besides a small ablate's) => what its one line says.
REFUSED = """
--vary bogus=1,2                                         => bogus is not a setting of train
--vary no-input-rmsnorm=on                               => no-input-rmsnorm is not a setting of train
--vary lr=0.1,-1                                         => --vary --lr must be > 0, got -1.0
--vary lr=fast                                           => --vary --lr must be a number, got 'fast'
--vary tie-lm-head=1                                     => --vary --tie-lm-head must be on or off, got '1'
--variants tied-norm --vary tie-lm-head=on,off           => each setting once
--vary n-head=3                                          => --n-embd (8) must be divisible by --n-head (3)
--vary lr                                                => give NAME=V1,V2
--vary lr=0.1,0.1                                        => give distinct values
--vary weight-decay=0,-0 --mode tensor                   => give distinct values
--jobs 2147483648                                        => --jobs must be >= 1 and <= 1024
--seeds 4611686018427387904                              => --seeds must be >= 1 and <= 10000
--vary lr=0.1 --vary lr=0.2                              => each setting once
--vary seed=1,2                                          => the seeds are --seeds
--vary val-fraction=0.1,0.2                              => one validation set
--variants untied-norm,fancy                             => fancy is not a variant
--variants tied-norm,tied-norm                           => each variant at most once
--vary norm+final-norm=layernorm                         => a value for each NAME
--vary norm+final-norm=layernorm+maybe                   => --final-norm must be on or off
--vary norm+norm=layernorm+rmsnorm                       => each setting once
--vary norm=layernorm --vary norm+final-norm=layernorm+on => each setting once
--design fancy                                           => --design must be product or alone
--vary position=rope --n-embd 6                          => must be even
--vary dropout=0.1                                       => needs --mode tensor
--vary mode+norm=tensor+rmsnorm,scalar+layernorm         => different validation sets
--vary n-kv-head=2,auto                                  => n-kv-head=2 and n-kv-head=auto make one run
--mode tensor --optimizer muon --variants untied-norm --vary beta1=0.8,0.9 => beta1=0.8 and beta1=0.9 make one run
--mode tensor --vary muon-lr=0.01,0.02                   => muon-lr=0.01 and muon-lr=0.02 make one run
--vary init+init-std=gpt2+0.02,gpt2+0.05                 => make one run
--mode tensor --optimizer muon --variants untied-norm --beta2 0.9 --vary muon-lr=0.01,0.02 => --beta2 is adamw's: it needs --optimizer adamw, which no cell has
"""


@pytest.mark.parametrize('args, message', [line.split(' => ') for line in REFUSED.strip().splitlines()])
def test_a_grid_that_cannot_run_is_refused_before_anything_runs(small, args, message):
    code, _, err = ablate(small / 'g', *args.split())
    assert code == 1 and one_line_error(err) and message in err, err
    assert not (small / 'g').exists()


def test_many_cells_are_drawn_in_small_multiples(small):
    assert ablate(small / 'g', '--vary', 'lr=0.02,0.01,0.005', '--vary', 'last-n=3,5', '--jobs', '2',
                  '--variants', 'untied-norm,tied-norm', '--steps', '3')[0] == 0
    assert (small / 'g' / 'losses.png').read_bytes()[:4] == b'\x89PNG'


def test_a_varied_switch_reads_on_and_off(small):
    code, out, err = ablate(small / 'g', '--variants', 'untied-norm', '--jobs', '1', '--steps', '3',
                            '--vary', 'final-norm=off,on')
    assert code == 0, err
    assert sorted(p.name for p in (small / 'g' / 'runs').iterdir()) == \
        ['untied-norm-final-norm=off-seed42', 'untied-norm-final-norm=on-seed42']
    assert '| on |' in (small / 'g' / 'table.md').read_text() and 'The reference: untied-norm, final-norm=off.' in out


def test_the_variants_are_an_axis_of_lm_head_and_the_input_norm_by_name(small):
    """--variants spells the joint axis tie-lm-head+input-rmsnorm, whose values go by their
    names; varying either setting instead replaces it."""
    assert grid.axes_of(['untied-norm', 'tied-norm'], []) == \
        [grid.axis('tie-lm-head+input-rmsnorm=off+on,on+on')]
    assert grid.axes_of(None, [('lr', [1, 2])])[0][1] == list(grid.VARIANT_NAMES)
    assert grid.axes_of(None, [('tie_lm_head', [False, True])]) == [('tie_lm_head', [False, True])]
    code, out, err = ablate(small / 'g', '--vary', 'tie-lm-head=off,on', '--jobs', '1', '--steps', '3')
    assert code == 0, err
    assert sorted(p.name for p in (small / 'g' / 'runs').iterdir()) == \
        ['tie-lm-head=off-seed42', 'tie-lm-head=on-seed42']
    rows = list(csv.DictReader(open(small / 'g' / 'summary.csv')))
    assert [(r['variant'], r['tie_lm_head']) for r in rows] == [('untied-norm', 'False'), ('tied-norm', 'True')]
    assert main_output(cli.main, 'ablate', '--resume', small / 'g')[0] == 0  # its plan reads back


def test_a_resume_notes_runs_made_on_another_blas_kernel(tmp_path, monkeypatch):
    here = sorted(provenance.kernels_of(None))
    def run(name, mode='tensor', pools=None):
        pools = [dict(user_api='blas', architecture=a) for a in here] if pools is None else pools
        (tmp_path / name).mkdir()
        (tmp_path / name / 'metrics.json').write_text(json.dumps(dict(environment=dict(mode=mode, thread_pools=pools))))
        return tmp_path / name
    same, other = run('same'), run('other', pools=[dict(architecture='Zen9')])
    scalar, odd = run('scalar', 'scalar', [dict(architecture='Zen9')]), run('odd', pools=5)
    listed = run('listed', pools=[dict(architecture=['Zen9'])])
    assert ablation.kernel_note([same, scalar, odd, listed], 3) is None  # one kernel; the rest say none
    assert ablation.kernel_note([same, other], 0) is None                # nothing to go
    monkeypatch.delenv('OPENBLAS_CORETYPE', raising=False)
    note = ablation.kernel_note([same, other, scalar], 2)
    assert note.startswith('note: 1 run of this ablation ran on the BLAS kernel Zen9, and the 2 runs to go')
    assert 'OPENBLAS_CORETYPE=Zen9 would take theirs' in note
    monkeypatch.setenv('OPENBLAS_CORETYPE', 'Haswell')
    assert 'OPENBLAS_CORETYPE=Haswell pins it here; env -u OPENBLAS_CORETYPE' in ablation.kernel_note([other], 1)
    resumed = run('resumed')  # its last session here, its first on another kernel
    record = json.loads((resumed / 'metrics.json').read_text())
    record['environment']['earlier'] = [dict(mode='tensor', thread_pools=[dict(architecture='Zen9')], last_step=3)]
    (resumed / 'metrics.json').write_text(json.dumps(record))
    assert ablation.kernel_note([same, resumed], 1).startswith('note: 1 run of this ablation ran on the BLAS kernel Zen9')


def test_a_recipe_ablation_keeps_what_was_given_and_resumes(small):
    code, out, err = ablate(small / 'g', '--mode', 'tensor', '--steps', '2', '--jobs', '1', '--activation', 'relu',
                            '--vary', 'recipe=microgpt,nanochat')
    assert code == 0, err
    assert 'recipe' in out and '2 recipe x 1 seed' in out  # the variants go: the recipes set them
    config = json.loads((small / 'g' / 'runs' / 'recipe=nanochat-seed42' / 'config.json').read_text())
    assert (config['recipe'], config['activation'], config['optimizer'], config['softcap']) == ('nanochat', 'relu', 'muon', 15.0)
    shutil.rmtree(small / 'g' / 'runs' / 'recipe=nanochat-seed42')
    code, out, _ = main_output(cli.main, 'ablate', '--resume', small / 'g', '--jobs', '1')
    assert code == 0 and '1 runs done, 1 to go' in out
    assert json.loads((small / 'g' / 'runs' / 'recipe=nanochat-seed42' / 'config.json').read_text()) == config
    code, _, err = ablate(small / 'm', '--mode', 'tensor', '--optimizer', 'muon', '--variants', 'untied-norm',
                          '--vary', 'lr=0.01,0.02')
    assert code == 1 and one_line_error(err) and 'vary muon-lr' in err


def test_a_path_runs_as_a_staircase(small):
    code, out, err = ablate(small / 'g', '--mode', 'tensor', '--steps', '3', '--jobs', '1', '--seeds', '2',
                            '--design', 'path', '--variants', 'untied-norm',
                            '--vary', 'activation=relu,relu2', '--vary', 'norm=rmsnorm,layernorm')
    assert code == 0, err
    assert 'the reference and a path of 2 changes x 2 seeds' in out
    config = json.loads((small / 'g' / 'runs' / 'untied-norm-activation=relu2-norm=layernorm-seed42' /
                         'config.json').read_text())
    assert (config['activation'], config['norm']) == ('relu2', 'layernorm')
    table = (small / 'g' / 'table.md').read_text()
    assert '| + activation=relu2 |' in table and '| + norm=layernorm |' in table and 'Design: a path' in table
    summary = json.loads((small / 'g' / 'summary.json').read_text())
    assert summary['design'] == 'path' and 'Δ val bpb vs the step before (95% CI)' in table
    val = {(r['activation'], r['norm'], r['seed']): r['val_bpb'] for r in summary['runs']}
    steps = [c['step_delta'] for c in summary['variants']]  # each cell's own step, paired by seed
    assert steps[0] is None and steps[1] == summary['variants'][1]['bpb_delta']
    assert steps[2] == stats.paired_interval([val['relu2', 'layernorm', s] - val['relu2', 'rmsnorm', s]
                                                 for s in (42, 43)])
    assert f"{steps[2]['mean']:+.4f} [{steps[2]['low']:+.4f}, {steps[2]['high']:+.4f}]" in table


def test_each_choice_alone_against_the_reference_shares_its_runs(small):
    code, out, err = ablate(small / 'g', '--mode', 'tensor', '--steps', '3', '--seeds', '2',
                            '--jobs', '1', '--design', 'alone', '--variants', 'untied-norm,tied-norm',
                            '--vary', 'activation=relu,gelu',
                            '--vary', 'norm+final-norm=rmsnorm+off,layernorm+on')
    assert code == 0, err
    assert 'the reference and 3 cells of one change each x 2 seeds' in out
    runs = sorted(p.name for p in (small / 'g' / 'runs').iterdir())
    assert len(runs) == 4 * 2 and \
        'untied-norm-activation=relu-norm+final-norm=layernorm+on-seed43' in runs
    config = json.loads((small / 'g' / 'runs' / 'untied-norm-activation=relu-norm+final-norm='
                         'layernorm+on-seed42' / 'config.json').read_text())
    assert (config['norm'], config['final_norm'], config['activation'], config['tie_lm_head']) == \
        ('layernorm', True, 'relu', False)
    summary = json.loads((small / 'g' / 'summary.json').read_text())
    assert summary['design'] == 'alone' and len(summary['variants']) == 4
    assert [c['val_delta'] is None for c in summary['variants']] == [True, False, False, False]
    table = (small / 'g' / 'table.md').read_text()
    assert 'Design: each choice alone against the reference' in table
    assert '| norm=layernorm, final-norm=on |' in table and '| (the reference) |' in table  # in words
    rows = list(csv.DictReader(open(small / 'g' / 'summary.csv')))
    assert {r['norm+final_norm'] for r in rows} == {'rmsnorm+off', 'layernorm+on'}
    shutil.rmtree(small / 'g' / 'runs' / runs[0])  # the plan keeps its design: resume finishes it
    code, out, _ = main_output(cli.main, 'ablate', '--resume', small / 'g', '--jobs', '1')
    assert code == 0 and '7 runs done, 1 to go' in out
    again = json.loads((small / 'g' / 'summary.json').read_text())
    assert [c['val_delta'] for c in again['variants']] == [c['val_delta'] for c in summary['variants']]
