"""cli.py: train and sample end to end in a temporary folder, run records, checkpoints,
and the one-line errors a user can cause."""
import csv
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cli
import data
import microgpt
from conftest import ROOT

DOCS = ['anna', 'bob', 'carla', 'dan', 'eve', 'fay', 'gil', 'hal', 'ida', 'jo', 'kai', 'lu']


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'input.txt').write_text('\n'.join(DOCS) + '\n')
    return tmp_path


def run(*args, cwd=None):
    """cli.py in a subprocess, as a user runs it: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, str(ROOT / 'cli.py'), *args], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def train_small(out, *extra):
    options = {'--steps': '12', '--samples': '3', '--n-embd': '8', '--n-head': '2', '--out': str(out)}
    options.update(zip(extra[::2], extra[1::2]))
    return cli.main(['train', *(x for kv in options.items() for x in kv)])


# ---------------------------------------------------------------------------
# train
def test_train_writes_a_complete_run_record(small, capsys):
    assert train_small(small / 'run') == 0
    printed = capsys.readouterr().out
    assert 'step    1 /   12 | loss ' in printed and 'step   12 /   12 | loss ' in printed
    run = small / 'run'
    assert sorted(p.name for p in run.iterdir()) == [
        'checkpoint.json', 'config.json', 'losses.csv', 'metrics.json', 'samples.txt']
    config = json.loads((run / 'config.json').read_text())
    assert config['seed'] == 42 and config['n_embd'] == 8 and config['mode'] == 'scalar'
    assert config['data_sha256'] == data.sha256_of('input.txt')
    metrics = json.loads((run / 'metrics.json').read_text())
    for key in ('final_loss', 'mean_loss_last_n', 'last_n', 'val_loss', 'steps_per_s',
                'tokens_per_s', 'train_time_s'):
        assert metrics[key] is not None, key
    env = metrics['environment']
    for key in ('seed', 'mode', 'backend', 'commit', 'python', 'numpy', 'numba', 'cpu', 'cores',
                'start_time'):
        assert env[key] not in (None, ''), key
    rows = list(csv.DictReader(open(run / 'losses.csv')))
    assert [int(r['step']) for r in rows] == list(range(1, 13))
    assert float(rows[-1]['loss']) == metrics['final_loss']  # full precision
    assert metrics['mean_loss_last_n'] == pytest.approx(
        sum(float(r['loss']) for r in rows) / 12)
    samples = (run / 'samples.txt').read_text().splitlines()
    assert len(samples) == 3 and all(f": {s}" in printed for s in samples)


def test_train_losses_are_those_of_the_library_run(small, capsys):
    train_small(small / 'run', '--seed', '3')
    rows = list(csv.DictReader(open(small / 'run' / 'losses.csv')))
    tok = data.Tokenizer.from_docs(DOCS)
    rng = random.Random(3)
    train_docs, _ = data.split_docs(DOCS, rng, 0.1)
    model = microgpt.GPT(tok.vocab_size, rng, n_embd=8, n_head=2)
    expected = [loss for _, loss, _ in
                microgpt.train(model, [tok.frame(d, 16) for d in train_docs], 12)]
    assert [float(r['loss']) for r in rows] == expected


def test_train_refuses_to_overwrite_a_run_record(small, capsys):
    assert train_small(small / 'run') == 0
    before = (small / 'run' / 'metrics.json').read_text()
    assert train_small(small / 'run') == 1
    assert 'is not empty; choose another --out' in capsys.readouterr().err
    assert (small / 'run' / 'metrics.json').read_text() == before


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_its_record(small, capsys):
    assert train_small(small / 'run', '--lr', '1000', '--steps', '200') == 2
    err = capsys.readouterr().err
    assert err.startswith('error: training diverged at step') and err.count('\n') == 1
    metrics = json.loads((small / 'run' / 'metrics.json').read_text())
    assert metrics['status'] == 'diverged' and metrics['steps'] < 200
    assert not (small / 'run' / 'checkpoint.json').exists()


# ---------------------------------------------------------------------------
# Checkpoints and sample
def test_checkpoint_reload_gives_identical_weights_and_logits(small, capsys):
    train_small(small / 'run')
    config, chars, weights, _ = cli.load_checkpoint(small / 'run' / 'checkpoint.json')
    model = cli.build_model(dict(config, mode='scalar'), config['vocab_size'], random.Random(0))
    model.load_weights(weights)
    # the same run again, in memory: its weights and logits must match the file exactly
    tok = data.Tokenizer.from_docs(DOCS)
    rng = random.Random(42)
    train_docs, _ = data.split_docs(DOCS, rng, 0.1)
    ref = microgpt.GPT(tok.vocab_size, rng, n_embd=8, n_head=2)
    list(microgpt.train(ref, [tok.frame(d, 16) for d in train_docs], 12))
    assert model.weights() == ref.weights()
    keys = lambda: ([[]], [[]])
    assert [v.data for v in model(0, 0, *keys())] == [v.data for v in ref(0, 0, *keys())]


def test_sample_without_a_seed_repeats_the_samples_train_printed(small, capsys):
    train_small(small / 'run')
    trained = (small / 'run' / 'samples.txt').read_text().splitlines()
    capsys.readouterr()
    assert cli.main(['sample', '--checkpoint', str(small / 'run' / 'checkpoint.json'),
                     '--num', '3']) == 0
    printed = [line.split(': ', 1)[1] if ': ' in line else '' for line in
               capsys.readouterr().out.splitlines()]
    assert printed == trained


def test_sample_with_a_prompt_continues_it(small, capsys):
    train_small(small / 'run')
    capsys.readouterr()
    cli.main(['sample', '--checkpoint', str(small / 'run' / 'checkpoint.json'), '--num', '5',
              '--prompt', 'ka', '--seed', '1'])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.split(': ', 1)[1].startswith('ka') for line in lines)


@pytest.mark.parametrize('mangle, message', [
    (lambda c: c.update(format='something else'), 'does not say it is one'),
    (lambda c: c.update(version=99), 'version 99'),
    (lambda c: c['config'].update(n_embd=12), 'has shape'),
    (lambda c: c['config'].update(n_head=3), 'not divisible'),
    (lambda c: c.update(vocab='ab'), 'vocabulary'),
    (lambda c: c['weights'].pop('wpe'), 'the weight names should be exactly'),
    (lambda c: c['weights']['wte'].update(float64='!!!'), 'weight wte is malformed'),
])
def test_a_malformed_or_mismatched_checkpoint_is_a_clear_error(small, capsys, mangle, message):
    train_small(small / 'run')
    path = small / 'run' / 'checkpoint.json'
    ckpt = json.loads(path.read_text())
    mangle(ckpt)
    path.write_text(json.dumps(ckpt))
    capsys.readouterr()
    assert cli.main(['sample', '--checkpoint', str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1


def test_checkpoint_floats_are_exact_on_reload(tmp_path):
    model = microgpt.GPT(4, random.Random(5), n_embd=4, n_head=1)
    for p in model.params[:3]:
        p.data = [np.nextafter(1.0, 2.0), 1e-310, -3.0e300][model.params.index(p)]
    cli.save_checkpoint(tmp_path / 'c.json', model, 'abc', 0, random.Random(0),
                        microgpt.Adam(model.params))
    _, _, weights, _ = cli.load_checkpoint(tmp_path / 'c.json')
    assert {k: v.tolist() for k, v in weights.items()} == model.weights()


# ---------------------------------------------------------------------------
# What a user can get wrong: one line on stderr, exit 1, nothing written
@pytest.mark.parametrize('args, message', [
    (['train', '--steps', '-5'], '--steps must be >= 1'),
    (['train', '--n-embd', '10'], 'divisible by --n-head'),
    (['train', '--temperature', '0'], '--temperature must be > 0'),
    (['train', '--mode', 'gpu'], '--mode must be scalar or tensor'),
    (['train', '--lr', 'fast'], '--lr must be a number'),
    (['train', '--bogus'], 'unknown option --bogus'),
    (['train', '--steps', '5', '--steps', '6'], '--steps is given twice'),
    (['train', '--num', '5'], '--num is not an option of train'),
    (['sample', '--checkpoint', 'c.json', '--steps', '5'], '--steps is not an option of sample'),
    (['ablate', '--tie-lm-head'], '--tie-lm-head is not an option of ablate'),
    (['train', '--from', 'r', '--steps', '5'], '--steps is not an option of train with --from'),
    (['train', '--steps', '5', '--resume', 'r'], '--steps is not an option of train with --resume'),
    (['train', '--from', 'r', '--resume', 'r'], '--resume is not an option of train with --from'),
    (['fly'], 'must be a command'),
    (['train', '--from', 'nowhere'], 'nowhere/config.json not found'),
    (['train', '--resume', 'nowhere'], 'nowhere/config.json not found'),
    (['sample'], 'sample needs --checkpoint'),
    (['sample', '--checkpoint', 'nope.json'], 'nope.json not found'),
    (['train', '--data', 'nope.txt', '--no-fetch'], 'nope.txt not found'),
    (['train', '--data', '.'], 'is a directory'),
])
def test_user_errors_are_one_line_and_exit_1(small, args, message):
    if args[0] == 'train' and '--out' not in args:
        args = args + ['--out', 'record']
    code, out, err = run(*args, cwd=small)
    assert code == 1 and message in err and err.count('\n') == 1 and 'Traceback' not in err
    assert not (small / 'record').exists()


def test_help_documents_every_option_with_its_default():
    code, out, _ = run('--help')
    assert code == 0
    for option in ('--data', '--no-fetch', '--seed', '--steps', '--n-embd', '--n-head',
                   '--n-layer', '--block-size', '--lr', '--tie-lm-head', '--no-input-rmsnorm',
                   '--val-fraction', '--out', '--samples', '--temperature', '--checkpoint',
                   '--num', '--prompt', '--batch-size', '--dtype', '--eval-every'):
        assert option in out
    assert '[default: 1000]' in out and '[default: 0.5]' in out


def test_train_as_a_user_runs_it_prints_steps_summary_and_samples(small):
    code, out, err = run('train', '--steps', '5', '--samples', '2', '--n-embd', '8',
                         '--n-head', '2', '--out', 'r', cwd=small)
    assert code == 0, err
    assert 'step    5 /    5 | loss' in out and 'final loss' in out and 'sample  2:' in out


# ---------------------------------------------------------------------------
# Reproducibility
def losses_of(run_dir):
    return (run_dir / 'losses.csv').read_text()


def test_the_same_command_twice_gives_bit_identical_losses(small, capsys):
    train_small(small / 'a', '--seed', '7')
    train_small(small / 'b', '--seed', '7')
    assert losses_of(small / 'a') == losses_of(small / 'b')


def test_train_from_a_record_reruns_it_exactly(small, capsys):
    train_small(small / 'a', '--seed', '5', '--lr', '0.02')
    assert cli.main(['train', '--from', str(small / 'a'), '--out', str(small / 'b')]) == 0
    assert losses_of(small / 'a') == losses_of(small / 'b')
    config = json.loads((small / 'b' / 'config.json').read_text())
    assert config['lr'] == 0.02 and config['rerun_of'] == str(small / 'a')


def test_from_refuses_a_changed_data_file(small, capsys):
    train_small(small / 'a')
    (small / 'input.txt').write_text('\n'.join(DOCS[:-1]) + '\n')
    assert cli.main(['train', '--from', str(small / 'a')]) == 1
    assert 'has changed' in capsys.readouterr().err


def test_stop_then_resume_equals_one_uninterrupted_run(small, capsys):
    train_small(small / 'whole', '--steps', '20')
    assert train_small(small / 'half', '--steps', '20', '--stop-after', '10') == 0
    assert json.loads((small / 'half' / 'metrics.json').read_text())['status'] == 'stopped'
    assert cli.main(['train', '--resume', str(small / 'half'), '--out', str(small / 'rest')]) == 0
    assert losses_of(small / 'rest') == losses_of(small / 'whole')
    assert (small / 'rest' / 'samples.txt').read_text() == \
        (small / 'whole' / 'samples.txt').read_text()
    _, _, w_rest, _ = cli.load_checkpoint(small / 'rest' / 'checkpoint.json')
    _, _, w_whole, _ = cli.load_checkpoint(small / 'whole' / 'checkpoint.json')
    assert all(np.array_equal(w_rest[k], w_whole[k]) for k in w_whole)


def test_a_finished_run_cannot_be_resumed(small, capsys):
    train_small(small / 'a')
    assert cli.main(['train', '--resume', str(small / 'a')]) == 1
    assert 'only a stopped or interrupted run' in capsys.readouterr().err


# ---------------------------------------------------------------------------
# ablate
def ablate(out, *extra):
    return cli.main(['ablate', '--steps', '6', '--samples', '4', '--n-embd', '8', '--n-head', '2',
                     '--out', str(out), *extra])


def test_ablation_runs_four_variants_per_seed_and_summarizes_them(small, capsys):
    assert ablate(small / 'abl', '--seeds', '2', '--jobs', '1') == 0
    printed = capsys.readouterr().out
    runs = sorted(p.name for p in (small / 'abl' / 'runs').iterdir())
    assert runs == sorted(f"{v}-seed{s}" for v in cli.VARIANTS for s in (42, 43))
    for run in runs:  # each a normal run record
        assert (small / 'abl' / 'runs' / run / 'metrics.json').exists()
    rows = list(csv.DictReader(open(small / 'abl' / 'summary.csv')))
    assert len(rows) == 8
    summary = json.loads((small / 'abl' / 'summary.json').read_text())
    tied = next(v for v in summary['variants'] if v['variant'] == 'tied-norm')
    diffs = [float(r['val_loss']) - float(next(q['val_loss'] for q in rows if q['seed'] == r['seed']
             and q['variant'] == 'untied-norm')) for r in rows if r['variant'] == 'tied-norm']
    assert tied['val_delta']['mean'] == pytest.approx(sum(diffs) / 2)
    assert tied['val_delta']['low'] < tied['val_delta']['mean'] < tied['val_delta']['high']
    table = (small / 'abl' / 'table.md').read_text()
    assert table in printed and '(reference)' in table and '±' in table


@pytest.mark.parametrize('mode', ['scalar', 'tensor'])
def test_ablation_results_do_not_depend_on_jobs(small, capsys, mode):
    assert ablate(small / 'one', '--jobs', '1', '--mode', mode) == 0
    assert ablate(small / 'two', '--jobs', '2', '--mode', mode) == 0
    for v in cli.VARIANTS:
        run = f"runs/{v}-seed42/losses.csv"
        assert (small / 'one' / run).read_text() == (small / 'two' / run).read_text()


def test_ablation_resume_skips_finished_runs(small, capsys):
    assert ablate(small / 'abl', '--jobs', '1') == 0
    finished = small / 'abl' / 'runs' / 'untied-norm-seed42' / 'metrics.json'
    stamp = finished.read_text()
    unfinished = small / 'abl' / 'runs' / 'tied-nonorm-seed42'
    import shutil
    shutil.rmtree(unfinished)  # as if Ctrl-C had stopped the ablation before this run
    capsys.readouterr()
    assert cli.main(['ablate', '--resume', str(small / 'abl'), '--jobs', '1']) == 0
    assert '3 runs done, 1 to go' in capsys.readouterr().out
    assert finished.read_text() == stamp and (unfinished / 'metrics.json').exists()


# ---------------------------------------------------------------------------
# Tensor mode through the command line
def train_tensor(out, *extra):
    return train_small(out, '--mode', 'tensor', '--batch-size', '4', *extra)


def test_tensor_mode_trains_and_writes_the_same_record(small, capsys):
    assert train_tensor(small / 'run', '--steps', '20') == 0
    metrics = json.loads((small / 'run' / 'metrics.json').read_text())
    assert metrics['environment']['backend'] == 'numpy+numba float32'
    assert metrics['val_loss'] is not None and metrics['tokens_per_s'] > 0
    rows = list(csv.DictReader(open(small / 'run' / 'losses.csv')))
    assert len(rows) == 20 and float(rows[-1]['loss']) < float(rows[0]['loss'])


def test_tensor_mode_reruns_bit_identically_and_resumes_exactly(small, capsys):
    train_tensor(small / 'a', '--steps', '20')
    train_tensor(small / 'b', '--steps', '20')
    assert losses_of(small / 'a') == losses_of(small / 'b')
    train_tensor(small / 'half', '--steps', '20', '--stop-after', '7')
    assert cli.main(['train', '--resume', str(small / 'half'), '--out', str(small / 'rest')]) == 0
    assert losses_of(small / 'rest') == losses_of(small / 'a')
    assert (small / 'rest' / 'samples.txt').read_text() == (small / 'a' / 'samples.txt').read_text()


def test_a_checkpoint_samples_the_same_in_both_modes(small, capsys):
    train_small(small / 'run')  # scalar-trained, float64 weights
    capsys.readouterr()
    outputs = []
    for mode in ('scalar', 'tensor'):
        cli.main(['sample', '--checkpoint', str(small / 'run' / 'checkpoint.json'), '--num', '8',
                  '--mode', mode, '--prompt', 'a'])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count('sample') == 8


def test_batched_sampling_gives_the_asked_number_of_samples(small, capsys):
    train_small(small / 'run')
    capsys.readouterr()
    assert cli.main(['sample', '--checkpoint', str(small / 'run' / 'checkpoint.json'), '--num', '6',
                     '--mode', 'tensor', '--batched', '--prompt', 'd']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(line.split(': ', 1)[1].startswith('d') for line in lines)


def test_a_diverging_tensor_run_stops_with_a_clear_message(small, capsys):
    assert train_tensor(small / 'run', '--lr', '1e30', '--steps', '50') == 2
    assert 'training diverged' in capsys.readouterr().err
    assert json.loads((small / 'run' / 'metrics.json').read_text())['status'] == 'diverged'


def test_bench_times_both_modes_side_by_side_and_saves_the_table(small, capsys):
    assert cli.main(['bench', '--bench-steps', '3', '--warmup', '1', '--repeats', '2',
                     '--n-embd', '8', '--n-head', '2', '--batch-size', '4',
                     '--out', str(small / 'bench')]) == 0
    result = json.loads((small / 'bench' / 'bench.json').read_text())
    assert [(r['mode'], r['batch_size']) for r in result['results']] == \
        [('scalar', 1), ('tensor', 1), ('tensor', 4)]
    for r in result['results']:
        assert r['steps_per_s_range'][0] <= r['steps_per_s'] <= r['steps_per_s_range'][1]
    assert set(result['ratios']) == {'tensor batch 1 / scalar, tokens/s',
                                     'tensor batch 4 / scalar, tokens/s'}
    for key in ('cpu', 'cores', 'threads', 'python', 'numpy', 'numba', 'blas'):
        assert result['environment'][key] not in (None, '')
    assert (small / 'bench' / 'bench.md').read_text() in capsys.readouterr().out


# ---------------------------------------------------------------------------
# Ctrl-C, as a user presses it: SIGINT to a running command
def start(*args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_line(p, text):
    for line in p.stdout:
        if text in line:
            return
    raise AssertionError(f"no line with {text!r}; stderr: {p.stderr.read()}")


def test_ctrl_c_during_training_keeps_a_record_that_resumes(small):
    p = start('train', '--steps', '100000', '--n-embd', '8', '--n-head', '2', '--samples', '2',
              '--out', 'run', cwd=small)
    wait_for_line(p, 'step   20 / 100000')
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and 'Traceback' not in err
    assert 'python cli.py train --resume run' in out
    metrics = json.loads((small / 'run' / 'metrics.json').read_text())
    assert metrics['status'] == 'interrupted' and metrics['steps'] >= 20
    _, _, _, ckpt = cli.load_checkpoint(small / 'run' / 'checkpoint.json')
    assert ckpt['step'] == metrics['steps'] == ckpt['adam']['t']


def test_ctrl_c_during_an_ablation_keeps_finished_runs_and_says_how_to_resume(small):
    p = start('ablate', '--mode', 'tensor', '--steps', '30000', '--n-embd', '8', '--n-head', '2',
              '--jobs', '2', '--samples', '0', '--out', 'abl', cwd=small)
    wait_for_line(p, 'ablation: 4 variants')
    time.sleep(3)  # the first two runs are training
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'Traceback' not in err
    assert 'python cli.py ablate --resume abl' in err
    statuses = {d.name: json.loads((d / 'metrics.json').read_text())['status']
                for d in (small / 'abl' / 'runs').iterdir() if (d / 'metrics.json').exists()}
    assert statuses and set(statuses.values()) <= {'completed', 'interrupted'}
    assert len(statuses) < 4  # the queued runs did not start
