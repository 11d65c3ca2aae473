"""training.py: a run end to end, its record, the reference run through the command line,
stopping and continuing, and what a user can do to a run that must not lose its work."""
import csv
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import cli
import data
import microgpt
import tensorgpt
from microgpt_lab import checkpoint, models, provenance, records, sampling, settings, training
from conftest import (DOCS, NAMES, ROOT, main_output, one_line_error, reference_run, run_cli,
                      train_small)


def losses_of(run_dir):
    return (run_dir / 'losses.csv').read_text()


def metrics_of(run_dir):
    return json.loads((run_dir / 'metrics.json').read_text())


def config(*argv):
    """The settings cli.py makes of `train ARGV`."""
    return cli.parse_config(cli.parse_args(['train', *map(str, argv)]))


# ---------------------------------------------------------------------------
# The reference run, through the command line, in both modes: every line it printed.
@pytest.mark.parametrize('mode', ['scalar', 'tensor'])
def test_cli_prints_every_loss_and_sample_the_reference_printed(tmp_path, reference, mode):
    if mode == 'scalar':  # `python cli.py train`, run in the background from the start
        code, out, err = reference_run('cli')
    else:
        code, out, err = run_cli('train', '--out', 'run', '--mode', 'tensor', '--dtype', 'float64',
                                 '--batch-size', '1', '--log-every', '1', cwd=tmp_path)
    assert code == 0, err
    printed_steps = [line[:line.index(' | loss ') + 14] for line in out.splitlines()
                     if line.startswith('step ')]
    assert printed_steps == reference['steps']  # all 1000, to the printed 4 decimals
    assert [line for line in out.splitlines() if line.startswith('sample ')] == reference['samples']
    assert 'mean of the last 100 steps 2.2761' in out


# ---------------------------------------------------------------------------
# The record
def test_train_writes_a_complete_run_record(small, capsys):
    assert train_small(small / 'run') == 0
    printed = capsys.readouterr().out
    assert 'step    1 /   12 | loss ' in printed and 'step   12 /   12 | loss ' in printed
    assert 'note: the loss stayed' not in printed  # it learnt
    run = small / 'run'
    assert sorted(p.name for p in run.iterdir()) == [
        'checkpoint.json', 'config.json', 'losses.csv', 'losses.png', 'metrics.json', 'samples.txt']
    assert (run / 'losses.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    config = json.loads((run / 'config.json').read_text())
    assert config['seed'] == 42 and config['n_embd'] == 8 and config['mode'] == 'scalar'
    assert config['data'] == str(small / 'docs.txt')  # absolute, whatever was typed
    assert config['data_sha256'] == data.sha256_of('docs.txt')
    metrics = metrics_of(run)
    for key in ('final_loss', 'mean_loss_last_n', 'last_n', 'val_loss', 'steps_per_s',
                'tokens_per_s', 'train_time_s', 'warmup_s'):
        assert metrics[key] is not None, key
    assert 10 < metrics['peak_memory_mb'] < 24 * 1024  # this process's peak resident memory
    env = metrics['environment']
    for key in ('seed', 'mode', 'backend', 'commit', 'python', 'numpy', 'numba', 'cpu', 'cpu_id', 'cores',
                'start_time'):
        assert env[key] not in (None, ''), key
    rows = list(csv.DictReader(open(run / 'losses.csv')))
    assert [int(r['step']) for r in rows] == list(range(1, 13))
    assert float(rows[-1]['loss']) == metrics['final_loss']  # full precision
    assert metrics['mean_loss_last_n'] == pytest.approx(sum(float(r['loss']) for r in rows) / 12)
    samples = (run / 'samples.txt').read_text().splitlines()
    assert len(samples) == 3 and all(f": {s}" in printed for s in samples)


def test_train_losses_are_those_of_the_library_run(small, capsys):
    train_small(small / 'run', '--seed', '3')
    rows = list(csv.DictReader(open(small / 'run' / 'losses.csv')))
    tok = data.Tokenizer.from_docs(DOCS)
    rng = random.Random(3)
    train_docs, _ = data.split_docs(DOCS, rng, 0.1)
    model = microgpt.GPT(microgpt.GPTConfig(tok.vocab_size, n_embd=8, n_head=2), rng)
    expected = [loss for _, loss, _ in microgpt.train(model, [tok.frame(d, 16) for d in train_docs], 12)]
    assert [float(r['loss']) for r in rows] == expected


def test_validation_loss_is_taken_on_the_held_out_documents(small, capsys):
    docs = [''.join(random.Random(i).choices('abcdef', k=random.Random(i).randint(2, 7)))
            for i in range(60)]
    (small / 'many.txt').write_text('\n'.join(docs) + '\n')
    assert train_small(small / 'run', data='many.txt') == 0
    ckpt = checkpoint.load(small / 'run' / 'checkpoint.json')
    tok = data.Tokenizer(ckpt['vocab'])
    model, _ = models.from_checkpoint(ckpt, 'scalar')
    train_docs, val_docs = data.split_docs(docs, random.Random(42), 0.1)
    assert len(val_docs) == 6 and not set(val_docs) <= set(train_docs)
    held_out = microgpt.evaluate(model, [tok.frame(d, 16) for d in val_docs])
    seen = microgpt.evaluate(model, [tok.frame(d, 16) for d in train_docs[:6]])
    metrics = metrics_of(small / 'run')
    assert metrics['val_loss'] == held_out != seen and metrics['val_docs'] == 6


def test_sample_shares_count_every_sample_once():
    shares = sampling.sample_shares(['ann', 'bo', 'cy', 'dee'], train_docs=['ann', 'x'],
                                    val_docs=['bo', 'ann'])
    assert shares == dict(train=0.25, val=0.25, new=0.5)  # ann is a training name, even if held out too


def test_the_recorded_sample_shares_are_those_of_the_printed_samples(small, capsys):
    assert train_small(small / 'run', '--samples', '30', '--steps', '40') == 0
    samples = (small / 'run' / 'samples.txt').read_text().splitlines()
    train_docs, val_docs = data.split_docs(DOCS, random.Random(42), 0.1)
    assert metrics_of(small / 'run')['samples'] == sampling.sample_shares(samples, train_docs, val_docs)


def test_train_refuses_to_overwrite_a_run_record(small, capsys):
    assert train_small(small / 'run') == 0
    before = (small / 'run' / 'metrics.json').read_text()
    assert train_small(small / 'run') == 1
    assert 'is not empty; choose another --out' in capsys.readouterr().err
    assert (small / 'run' / 'metrics.json').read_text() == before


def test_two_runs_started_at_once_in_one_folder_cannot_both_write_it(small):
    args = [sys.executable, str(ROOT / 'cli.py'), 'train', '--data', 'docs.txt', '--steps', '30',
            '--n-embd', '8', '--n-head', '2', '--out', 'run']
    procs = [subprocess.Popen(args, cwd=small, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1]
    err = next(e for code, e in results if code == 1)
    assert one_line_error(err) and ('in use by another command' in err or 'is not empty' in err)
    assert metrics_of(small / 'run')['status'] == 'completed'
    assert not (small / 'run' / '.running').exists()


def test_a_folder_held_by_another_command_is_refused(small, capsys):
    (small / 'run').mkdir()
    records.claim(str(small / 'run'))
    assert train_small(small / 'run') == 1
    assert 'in use by another command' in capsys.readouterr().err


@pytest.mark.parametrize('option, value', [('--softcap', '1e-20'), ('--norm-eps', '1e100')])
def test_a_run_whose_loss_stays_at_ln_v_says_so_and_names_the_likely_setting(small, capsys, option, value):
    assert train_small(small / 'run', option, value) == 0
    losses = [float(r['loss']) for r in csv.DictReader(open(small / 'run' / 'losses.csv'))]
    assert max(abs(x - np.log(len(set(''.join(DOCS))) + 1)) for x in losses) < training.STUCK
    out = capsys.readouterr().out
    assert "note: the loss stayed at ln 19 = 2.9444, a uniform guess's, at every step" in out
    assert f"{option} {float(value)} may keep its logits flat" in out


def test_a_loss_is_stuck_only_if_every_step_and_the_validation_stayed_at_ln_v():
    flat = np.log(19)
    assert training.stuck([flat, flat + 1e-6], None, 19) and training.stuck([flat] * 3, flat, 19)
    assert not training.stuck([flat], None, 19)  # the first step's is the untrained model's
    assert not training.stuck([flat, flat - 0.01], None, 19) and not training.stuck([flat] * 2, 2.5, 19)


# ---------------------------------------------------------------------------
# Divergence
def test_a_diverging_run_stops_with_a_clear_message_and_keeps_its_record(small, capsys):
    assert train_small(small / 'run', '--lr', '1000', '--steps', '200') == 2
    err = capsys.readouterr().err
    assert err.startswith('error: training diverged at step') and err.count('\n') == 1
    metrics = metrics_of(small / 'run')
    assert metrics['status'] == 'diverged' and metrics['steps'] < 200
    assert not (small / 'run' / 'checkpoint.json').exists()


@pytest.mark.parametrize('mode, lr', [('tensor', '1e20'), ('tensor', '1e30'), ('scalar', '1e20')])
def test_divergence_on_the_last_update_is_caught(small, mode, lr):
    batch = ['--batch-size', '4'] if mode == 'tensor' else []
    code, out, err = main_output(cli.main, 'train', '--mode', mode, *batch, '--steps', '1',
                                 '--lr', lr, '--data', 'docs.txt', '--out', 'run')
    assert code == 2 and one_line_error(err) and 'diverged' in err
    metrics = metrics_of(small / 'run')
    assert metrics['status'] == 'diverged' and 'samples' not in metrics
    assert not (small / 'run' / 'checkpoint.json').exists()


def test_a_divergence_names_the_model_setting_that_plausibly_caused_it(small):
    code, _, err = main_output(cli.main, 'train', '--mode', 'tensor', '--batch-size', '4', '--steps', '3',
                               '--qk-scale', '1e30', '--data', 'docs.txt', '--out', 'run')
    assert code == 2 and one_line_error(err)
    assert 'diverged at step 1; try other values of --qk-scale 1e+30, or a lower --lr or --init-std' in err
    defaults = dict({n: s.default for n, s in settings.SETTINGS.items()}, mode='tensor')
    assert training.divergence_hint(settings.with_recipe(dict(defaults, recipe='nanochat'))) == \
        'try a lower --muon-lr'  # a recipe's own values are no suspects; its init has no --init-std


def test_weights_finite_sees_a_single_bad_weight():
    model = tensorgpt.GPT(tensorgpt.GPTConfig(5, n_embd=4, n_head=1), random.Random(0))
    assert models.weights_finite(model)
    model.params[3].data[1, 2] = np.inf
    assert not models.weights_finite(model)
    scalar = microgpt.GPT(microgpt.GPTConfig(5, n_embd=4, n_head=1), random.Random(0))
    scalar.params[-1].data = float('nan')
    assert not models.weights_finite(scalar)


# ---------------------------------------------------------------------------
# Validation documents
def test_eval_every_without_validation_documents_is_a_clear_error(small):
    (small / 'one.txt').write_text('anna\n')
    code, _, err = main_output(cli.main, 'train', '--data', 'one.txt', '--eval-every', '5', '--out', 'run')
    assert code == 1 and one_line_error(err) and 'needs validation data' in err
    assert not (small / 'run').exists()
    code, out, err = main_output(cli.main, 'train', '--data', 'one.txt', '--steps', '3', '--out', 'run')
    assert code == 0 and 'validation loss n/a (0 docs)' in out


# ---------------------------------------------------------------------------
# Honest throughput: numba's warm-up is timed apart
def test_throughput_leaves_out_the_warm_up(small, capsys, monkeypatch):
    monkeypatch.setattr(tensorgpt, 'warm_up', lambda dtype: time.sleep(0.3))
    assert train_small(small / 'run', '--mode', 'tensor', '--batch-size', '4', '--steps', '5') == 0
    m = metrics_of(small / 'run')
    assert m['warmup_s'] >= 0.3 and m['train_time_s'] < 0.3
    assert m['steps_per_s'] == pytest.approx(5 / m['train_time_s'])
    assert m['tokens_per_s'] == pytest.approx(m['tokens'] / m['train_time_s'])
    out = capsys.readouterr().out
    assert 's numba warm-up, not counted' in out
    # the share of the machine: model FLOP/s against the matmul peak measured at the end
    assert m['model_gflops_per_s'] == pytest.approx(m['tokens_per_s'] * m['model_flops_per_token'] / 1e9)
    assert m['share_of_peak'] == pytest.approx(m['model_gflops_per_s'] / m['matmul_peak_gflops_per_s'])
    assert f"{m['share_of_peak']:.1%} of the matmul peak" in out


# ---------------------------------------------------------------------------
# Reproducing: the same command, --from, --resume
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
    (small / 'docs.txt').write_text('\n'.join(DOCS[:-1]) + '\n')
    assert cli.main(['train', '--from', str(small / 'a')]) == 1
    assert 'has changed' in capsys.readouterr().err


def test_stop_then_resume_equals_one_uninterrupted_run(small, capsys):
    train_small(small / 'whole', '--steps', '20')
    assert train_small(small / 'half', '--steps', '20', '--stop-after', '10') == 0
    assert metrics_of(small / 'half')['status'] == 'stopped'
    assert cli.main(['train', '--resume', str(small / 'half'), '--out', str(small / 'rest')]) == 0
    assert losses_of(small / 'rest') == losses_of(small / 'whole')
    assert (small / 'rest' / 'samples.txt').read_text() == (small / 'whole' / 'samples.txt').read_text()
    w_rest = checkpoint.load(small / 'rest' / 'checkpoint.json')['weights']
    w_whole = checkpoint.load(small / 'whole' / 'checkpoint.json')['weights']
    assert all(np.array_equal(w_rest[k], w_whole[k]) for k in w_whole)
    # the resumed record counts the tokens of both sessions, so it matches the whole run's
    assert metrics_of(small / 'rest')['tokens'] == metrics_of(small / 'whole')['tokens']


def test_tensor_mode_reruns_bit_identically_and_resumes_exactly(small, capsys):
    tensor = ('--mode', 'tensor', '--batch-size', '4', '--steps', '20')
    train_small(small / 'a', *tensor)
    train_small(small / 'b', *tensor)
    assert losses_of(small / 'a') == losses_of(small / 'b')
    train_small(small / 'half', *tensor, '--stop-after', '7')
    capsys.readouterr()
    assert cli.main(['train', '--resume', str(small / 'half'), '--out', str(small / 'rest')]) == 0
    assert 'BLAS kernel' not in capsys.readouterr().out  # the same kernel: nothing to note
    assert losses_of(small / 'rest') == losses_of(small / 'a')
    assert (small / 'rest' / 'samples.txt').read_text() == (small / 'a' / 'samples.txt').read_text()
    earlier = metrics_of(small / 'rest')['environment']['earlier']  # what ran each session's steps
    assert [e['last_step'] for e in earlier] == [7] and earlier[0]['thread_pools'] == \
        metrics_of(small / 'half')['environment']['thread_pools']
    # resumed on another BLAS kernel (so the record says): a note, and the record names both
    half = json.loads((small / 'half' / 'metrics.json').read_text())
    other = 'Haswell' if 'Haswell' not in provenance.kernels_of(None) else 'Zen'
    for pool in half['environment']['thread_pools']:
        if pool['user_api'] == 'blas':
            pool['architecture'] = other
    (small / 'half' / 'metrics.json').write_text(json.dumps(half))
    assert cli.main(['train', '--resume', str(small / 'half'), '--out', str(small / 'moved')]) == 0
    assert f"note: steps 1 to 7 ran on the BLAS kernel {other}, the rest run on " \
        f"{'/'.join(sorted(provenance.kernels_of(None)))}: results differ" in capsys.readouterr().out
    env = metrics_of(small / 'moved')['environment']
    assert provenance.kernels_of(env['earlier'][0]) == {other} and provenance.kernels_of(env) != {other}


def test_a_finished_run_cannot_be_resumed(small, capsys):
    train_small(small / 'a')
    assert cli.main(['train', '--resume', str(small / 'a')]) == 1
    assert 'only a stopped or interrupted run' in capsys.readouterr().err


def test_resume_and_from_work_from_another_folder_with_relative_data(small, capsys):
    assert train_small(small / 'half', '--stop-after', '5') == 0
    elsewhere = small / 'elsewhere'
    elsewhere.mkdir()
    os.chdir(elsewhere)
    assert cli.main(['train', '--resume', '../half', '--out', 'rest']) == 0
    assert cli.main(['train', '--from', '../half', '--out', 'again']) == 0
    assert metrics_of(elsewhere / 'rest')['status'] == 'completed'


def test_from_finds_the_shipped_names_where_the_recorded_path_is_gone(small, capsys):
    assert train_small(small / 'a', '--steps', '2', '--samples', '0', '--mode', 'tensor',
                       '--batch-size', '4', data=NAMES) == 0
    cfg_path = small / 'a' / 'config.json'
    cfg = json.loads(cfg_path.read_text())
    cfg['data'] = '/no/such/folder/names.txt'  # a record made on another machine
    cfg_path.write_text(json.dumps(cfg))
    assert cli.main(['train', '--from', str(small / 'a'), '--out', str(small / 'b')]) == 0
    assert losses_of(small / 'a') == losses_of(small / 'b')
    assert json.loads((small / 'b' / 'config.json').read_text())['data'] == str(NAMES)


# Every file that --resume reads back is checked: one line naming the file and the field.
@pytest.fixture(scope='module')
def half(tmp_path_factory):
    """A run stopped halfway, made once for the tests that damage it (each a copy)."""
    folder = tmp_path_factory.mktemp('half')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    assert train_small(folder / 'half', '--steps', '10', '--stop-after', '5',
                       data=folder / 'docs.txt') == 0
    return folder / 'half'


def mangle_json(name, change):
    def mangle(run):
        obj = json.loads((run / name).read_text())
        change(obj)
        (run / name).write_text(json.dumps(obj))
    return mangle


@pytest.mark.parametrize('mangle, message', [
    (mangle_json('config.json', lambda c: c.pop('lr')), 'config.json: lr is missing'),
    (mangle_json('config.json', lambda c: c.update(lr='fast')), 'config.json: lr must be a finite number'),
    (mangle_json('config.json', lambda c: c.update(steps=2.5)), 'config.json: steps must be an integer'),
    (mangle_json('config.json', lambda c: c.update(mode='gpu')), 'config.json: mode must be scalar or tensor'),
    (mangle_json('config.json', lambda c: c.update(n_emb=8)), 'config.json: n_emb is not a setting'),
    (mangle_json('config.json', lambda c: c.update(n_embd=16)),
     'config.json: n_embd is 16, but ' ),
    (mangle_json('config.json', lambda c: c.update(seed=7)),  # it would not reproduce its losses
     'config.json: seed is 7, but '),
    (mangle_json('config.json', lambda c: c.update(lr=0.02)), 'config.json: lr is 0.02, but '),
    (mangle_json('config.json', lambda c: c.update(data_sha256='0' * 64)), 'config.json: data_sha256 is'),
    (lambda run: [mangle_json('checkpoint.json', lambda c: c.pop('settings'))(run),  # an older
                  mangle_json('config.json', lambda c: c.update(n_embd=16))(run)],  # checkpoint
     'config.json: n_embd is 16, but '),
    (mangle_json('checkpoint.json', lambda c: c['settings'].update(steps=20)),
     'config.json: steps is 10, but '),
    (mangle_json('checkpoint.json', lambda c: c['settings'].update(steps='x')),
     'checkpoint.json: settings steps must be an integer'),
    (mangle_json('checkpoint.json', lambda c: c['config'].update(softcap=5.0)),  # the model's,
     'checkpoint.json is not a valid checkpoint: config softcap is 5.0, but its settings say 0.0'),
    (mangle_json('checkpoint.json', lambda c: c['config'].update(norm_eps=0.5)),  # ... not the
     'config norm_eps is 0.5, but its settings say 1e-05'),  # record's, which --from re-runs
    (mangle_json('config.json', lambda c: c.update(data_sha256=7)), 'config.json: data_sha256'),
    (mangle_json('metrics.json', lambda m: m.update(status='done')), 'metrics.json: status'),
    (mangle_json('metrics.json', lambda m: m.update(val_history=[[1]])), 'metrics.json: val_history'),
    (mangle_json('metrics.json', lambda m: m.pop('tokens')), 'metrics.json: tokens is missing'),
    (mangle_json('checkpoint.json', lambda c: c.pop('adam')), 'no Adam state'),
    (mangle_json('checkpoint.json', lambda c: c.pop('rng_state')), 'no rng_state'),
    (mangle_json('checkpoint.json', lambda c: c.update(rng_state=[3, [1, 2], None])), 'rng_state is not'),
    (mangle_json('checkpoint.json', lambda c: c.update(step=4)), 'does not fit'),
    (lambda run: (run / 'losses.csv').unlink(), 'losses.csv not found'),
    (lambda run: (run / 'losses.csv').write_text('step,loss\n1,2.5\n'), 'losses.csv has 1 steps'),
    (lambda run: (run / 'losses.csv').write_text('step,loss\n1,x\n'), 'not a step and a loss'),
    (lambda run: (run / 'config.json').write_text('[1, 2]'), 'should hold a JSON object'),
    (lambda run: (run / 'metrics.json').write_text('{"status": '), 'not readable JSON'),
])
def test_resume_checks_every_file_it_reads_back(small, capsys, half, mangle, message):
    shutil.copytree(half, small / 'half')
    mangle(small / 'half')
    capsys.readouterr()
    assert cli.main(['train', '--resume', str(small / 'half'), '--out', str(small / 'rest')]) == 1
    err = capsys.readouterr().err
    assert message in err and one_line_error(err)
    assert not (small / 'rest').exists()


def test_resume_refuses_a_muon_v_that_is_not_one_value_along_its_axis(small, capsys):
    assert train_small(small / 'half', '--mode', 'tensor', '--optimizer', 'muon', '--batch-size', '4',
                       '--steps', '6', '--stop-after', '3') == 0
    path = small / 'half' / 'checkpoint.json'
    assert models.uneven_muon_v(checkpoint.load(path, need_adam=True)) is None  # as training left it
    ckpt = json.loads(path.read_text())
    v = checkpoint.decode_array(ckpt['adam']['v']['layer0.attn_wq'])  # square: one value a row
    v[0, 1] = v[0, 0] + 1.0
    ckpt['adam']['v']['layer0.attn_wq'] = checkpoint.encode_array(v)
    path.write_text(json.dumps(ckpt))
    code, _, err = main_output(cli.main, 'train', '--resume', 'half', '--out', 'rest')
    assert code == 1 and one_line_error(err)
    assert "checkpoint.json: Muon's v of layer0.attn_wq is not one value a row (or column)" in err
    assert not (small / 'rest').exists()


# ---------------------------------------------------------------------------
# Signals: Ctrl-C and SIGTERM stop after the step, and the record resumes
def start(*args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_line(p, text):
    for line in p.stdout:
        if text in line:
            return
    raise AssertionError(f"no line with {text!r}; stderr: {p.stderr.read()}")


@pytest.mark.parametrize('signum, code', [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                          (signal.SIGHUP, 129)])  # SIGHUP: ssh dropped
def test_a_signal_during_training_keeps_a_record_that_resumes(small, signum, code):
    p = start('train', '--data', 'docs.txt', '--steps', '100000', '--n-embd', '8', '--n-head', '2',
              '--samples', '2', '--out', 'run', cwd=small)
    wait_for_line(p, 'step   20 / 100000')
    p.send_signal(signum)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code and 'Traceback' not in err
    assert 'cli.py train --resume run' in out
    metrics = metrics_of(small / 'run')
    assert metrics['status'] == 'interrupted' and metrics['steps'] >= 20
    ckpt = checkpoint.load(small / 'run' / 'checkpoint.json')
    assert ckpt['step'] == metrics['steps'] == ckpt['adam']['t']


@pytest.mark.parametrize('when', ['evaluation', 'samples'])
def test_a_signal_after_the_last_step_interrupts_and_resume_finishes(small, capsys, monkeypatch, when):
    train_small(small / 'whole', '--samples', '4')
    stop, calls, validate, sample = [], [], models.validate, microgpt.sample

    def validate_then_signal(model, docs, counted):  # Ctrl-C while the final evaluation runs
        stop.append(True)
        return validate(model, docs, counted)

    def sample_then_signal(*args, **kwargs):  # Ctrl-C while the second sample is drawn
        stop.extend([True] * (len(calls) == 1))
        calls.append(1)
        return sample(*args, **kwargs)
    if when == 'evaluation':
        monkeypatch.setattr(models, 'validate', validate_then_signal)
    else:
        monkeypatch.setattr(microgpt, 'sample', sample_then_signal)
    cfg = config('--data', 'docs.txt', '--steps', '12', '--samples', '4', '--n-embd', '8',
                 '--n-head', '2')
    out = small / 'late'
    out.mkdir()
    metrics = training.run(cfg, str(out), DOCS, should_stop=lambda: bool(stop))
    monkeypatch.undo()
    assert metrics['status'] == 'interrupted' and metrics['steps'] == 12
    assert metrics['val_loss'] is None and (out / 'samples.txt').read_text() == ''
    assert cli.main(['train', '--resume', str(out), '--out', str(small / 'rest')]) == 0
    assert (small / 'rest' / 'samples.txt').read_text() == (small / 'whole' / 'samples.txt').read_text()
    assert metrics_of(small / 'rest')['val_loss'] == metrics_of(small / 'whole')['val_loss']
    history = lambda run: [entry[:2] for entry in metrics_of(run)['val_history']]  # less the times
    assert history(small / 'rest') == history(small / 'whole')


# ---------------------------------------------------------------------------
# Writes that fail after training
def failing_writes_in(folder, monkeypatch):
    write = records.write_atomic

    def write_atomic(path, text):
        if os.path.dirname(os.path.abspath(path)) == str(folder) and path.endswith('losses.csv'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(path, text)
    monkeypatch.setattr(records, 'write_atomic', write_atomic)


def test_a_record_that_cannot_be_written_goes_to_a_temporary_folder(small, capsys, monkeypatch):
    failing_writes_in(small / 'run', monkeypatch)
    assert train_small(small / 'run') == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and 'No space left on device' in err and 'saved to' in err
    rescue = err.strip().rsplit('saved to ', 1)[1].split(' instead')[0]
    assert metrics_of(Path(rescue))['status'] == 'completed'
    assert sorted(os.listdir(rescue)) == ['checkpoint.json', 'config.json', 'losses.csv',
                                          'metrics.json', 'samples.txt']
    shutil.rmtree(rescue)
    assert not (small / 'run').exists() or os.listdir(small / 'run') == []


def test_a_record_that_cannot_be_written_anywhere_says_so(small, capsys, monkeypatch):
    write = records.write_atomic

    def no_space(path, text):
        if path.endswith('.json'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(path, text)
    monkeypatch.setattr(records, 'write_atomic', no_space)
    rescues = lambda: set(Path(tempfile.gettempdir()).glob('microgpt-lab-record-*'))
    before = rescues()
    assert train_small(small / 'run') == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and 'the record is lost' in err
    assert rescues() == before  # no half of the record was left in a temporary folder


def test_output_to_a_closed_pipe_does_not_stop_the_run(small):
    p = start('train', '--data', 'docs.txt', '--steps', '60', '--n-embd', '8', '--n-head', '2',
              '--out', 'run', cwd=small)
    p.stdout.readline()
    p.stdout.close()  # as `| head -1` does
    assert p.wait(timeout=120) == 0 and 'Traceback' not in p.stderr.read()
    assert metrics_of(small / 'run')['status'] == 'completed'


ACCENTED = 'hełło\nwőrld\nnaïve\ncafé\nzoğ\n'  # ł, ő and ğ are in none of the encodings below


@pytest.mark.parametrize('encoding', ['ascii'])  # (any other lacks fewer: output.standard_streams)
def test_text_the_terminal_cannot_encode_is_replaced_and_never_taken_for_divergence(small, encoding):
    (small / 'acc.txt').write_text(ACCENTED * 4, encoding='utf-8')
    env = dict(os.environ, PYTHONIOENCODING=encoding)
    run = lambda *args: subprocess.run([sys.executable, str(ROOT / 'cli.py'), *args], cwd=small,
                                       env=env, capture_output=True, encoding=encoding)
    p = run('train', '--mode', 'tensor', '--steps', '5', '--data', 'acc.txt', '--out', 'r',
            '--n-embd', '8', '--n-head', '2', '--samples', '30', '--temperature', '2')
    assert p.returncode == 0 and p.stderr == '', p.stderr
    assert metrics_of(small / 'r')['status'] == 'completed' and (small / 'r' / 'checkpoint.json').exists()
    drawn = (small / 'r' / 'samples.txt').read_text(encoding='utf-8')  # the record keeps them whole
    assert 'ł' in drawn and 'ł' not in p.stdout and '?' in p.stdout  # the terminal shows what it can
    p = run('sample', '--checkpoint', 'r/checkpoint.json', '--num', '30', '--temperature', '2')
    assert p.returncode == 0 and p.stderr == '' and '?' in p.stdout
    p = run('attention', '--checkpoint', 'r/checkpoint.json', '--text', 'zoğ', '--png', 'a.png')
    assert p.returncode == 0 and p.stderr == '' and 'z o ?' in p.stdout


@pytest.mark.parametrize('where', ['/dev/full', 'a file size limit', 'closed'])
def test_a_stdout_that_cannot_be_written_keeps_the_run_and_its_record(small, where):
    """A full disk (/dev/full answers every write with ENOSPC), `ulimit -f` and `>&-`: the run
    goes on to its end and keeps its record; at most one warning line."""
    import resource
    steps = 1000 if where == 'a file size limit' else 100  # (a log of 1000 lines passes the limit)
    cmd = [sys.executable, str(ROOT / 'cli.py'), 'train', '--mode', 'tensor', '--steps', str(steps),
           '--log-every', '1', '--batch-size', '4', '--n-embd', '8', '--n-head', '2',
           '--data', 'docs.txt', '--out', 'r']
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))  # the log's
    with open(small / 'log', 'w') as log, open('/dev/full', 'w') as full:
        if where == 'closed':
            p = subprocess.run(['sh', '-c', '"$@" >&-', 'sh', *cmd], cwd=small, timeout=300,
                               stderr=subprocess.PIPE, text=True)
        else:
            p = subprocess.run(cmd, cwd=small, stdout=full if where == '/dev/full' else log,
                               stderr=subprocess.PIPE, text=True, timeout=300,
                               preexec_fn=limit if where != '/dev/full' else None)
    assert p.returncode == 0 and 'Traceback' not in p.stderr, p.stderr
    assert p.stderr.count('\n') == (0 if where == 'closed' else 1)
    if where != 'closed':
        assert p.stderr.startswith('warning: stdout could not be written to its end')
        assert 'and its record is whole' in p.stderr
    assert metrics_of(small / 'r')['status'] == 'completed' and metrics_of(small / 'r')['steps'] == steps
    assert (small / 'r' / 'checkpoint.json').exists()
    assert len((small / 'r' / 'losses.csv').read_text().splitlines()) == steps + 1


def test_the_thread_count_is_a_recorded_setting_that_reruns_use(small, capsys):
    assert train_small(small / 'one', '--mode', 'tensor', '--threads', '1') == 0
    assert json.loads((small / 'one' / 'config.json').read_text())['threads'] == 1
    assert train_small(small / 'auto', '--mode', 'tensor') == 0  # auto: every core
    assert json.loads((small / 'auto' / 'config.json').read_text())['threads'] == os.cpu_count()
    env = metrics_of(small / 'one')['environment']
    assert [p['num_threads'] for p in env['thread_pools'] if p['user_api'] in ('blas', 'numba')] \
        == [1, 1] and all(p.get('architecture') for p in env['thread_pools'] if p['user_api'] == 'blas')
    for threads in (1, 2):  # each count re-runs bit for bit
        run, again = small / f'run{threads}', small / f'again{threads}'
        assert train_small(run, '--mode', 'tensor', '--threads', threads, '--batch-size', 64,
                           '--dropout', 0.1) == 0
        assert cli.main(['train', '--from', str(run), '--out', str(again)]) == 0
        assert json.loads((again / 'config.json').read_text())['threads'] == threads
        for name in ('losses.csv', 'samples.txt'):
            assert (again / name).read_text() == (run / name).read_text()


def test_auto_threads_are_as_many_as_blas_runs_and_the_record_says_that_count(small, monkeypatch):
    import threadpoolctl
    monkeypatch.setattr(os, 'cpu_count', lambda: 999)  # more cores than BLAS runs threads
    with threadpoolctl.threadpool_limits(limits=None):  # (this process's count, restored after)
        assert train_small(small / 'run', '--steps', '2') == 0
    threads = json.loads((small / 'run' / 'config.json').read_text())['threads']
    env = metrics_of(small / 'run')['environment']
    assert threads < 999 and [p['num_threads'] for p in env['thread_pools'] if p['user_api'] == 'blas'] == [threads]
    code, _, err = main_output(cli.main, 'train', '--data', 'docs.txt', '--threads', threads + 1, '--out', 'more')
    assert code == 1 and one_line_error(err) and f"at most {threads} threads" in err
    assert not (small / 'more').exists()


def test_a_bad_numba_environment_is_one_line(small):
    env = dict(os.environ, NUMBA_NUM_THREADS='0')
    code, _, err = run_cli('train', '--mode', 'tensor', '--steps', '2', '--data', 'docs.txt',
                           cwd=small, env=env)
    assert code == 1 and one_line_error(err) and 'NUMBA_NUM_THREADS=0' in err
    assert not (small / 'results').exists()
    code, _, err = run_cli('plot', 'nothing', cwd=small, env=env)  # a command without numba
    assert code == 1 and one_line_error(err) and 'neither a run record' in err


def test_a_stop_before_the_first_step_keeps_a_record_without_a_picture(small, capsys):
    cfg = config('--data', 'docs.txt', '--steps', '12', '--n-embd', '8', '--n-head', '2')
    (small / 'r').mkdir()
    metrics = training.run(cfg, str(small / 'r'), DOCS, should_stop=lambda: True)
    out = capsys.readouterr().out
    assert metrics['status'] == 'interrupted' and metrics['steps'] == 0
    assert 'losses.png' not in out and not (small / 'r' / 'losses.png').exists()


def test_a_long_passage_stops_on_a_signal(small):
    (small / 'text.txt').write_text(TEXT)
    p = start('train', '--mode', 'tensor', '--data-format', 'text', '--data', 'text.txt',
              '--block-size', '8', '--batch-size', '4', '--n-embd', '8', '--n-head', '2',
              '--steps', '3', '--length', '10000000', '--out', 'run', cwd=small)
    wait_for_line(p, 'step    3 / ')
    time.sleep(1)  # drawing the passage, which would take an hour
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and 'Traceback' not in err
    assert metrics_of(small / 'run')['status'] == 'interrupted'


# ---------------------------------------------------------------------------
# Text data, and the training settings of larger models
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 6


def train_text(out, *extra):
    return train_small(out, '--mode', 'tensor', '--data-format', 'text', '--block-size', '8',
                       '--batch-size', '4', '--length', '40', *extra, data='text.txt')


@pytest.fixture
def text(small):
    (small / 'text.txt').write_text(TEXT)
    return small


def test_a_text_run_trains_on_windows_and_ends_with_a_passage(text, capsys):
    assert train_text(text / 'run', '--eval-every', '6') == 0
    out = capsys.readouterr().out
    passage = (text / 'run' / 'samples.txt').read_text()
    assert '--- passage (temperature 0.5, 40 characters) ---' in out and passage[:-1] in out
    assert len(passage) == 1 + 40 + 1 and passage[0] == '\n'  # begun at a newline
    config = json.loads((text / 'run' / 'config.json').read_text())
    assert config['data_format'] == 'text'
    m = metrics_of(text / 'run')
    n_val = len(TEXT) - int(len(TEXT) * 0.9)
    assert m['val_docs'] == (n_val - 1) // 8 and m['tokens'] == 12 * 4 * 8
    steps, times = [e[0] for e in m['val_history']], [e[2] for e in m['val_history']]
    assert steps == [6, 12] and 0 < times[0] < times[1] <= m['train_time_s']
    # the validation loss is the model's on every held-out window, from the checkpoint
    ckpt = checkpoint.load(text / 'run' / 'checkpoint.json')
    tok = data.Tokenizer(ckpt['vocab'], bos=False)
    model, _ = models.from_checkpoint(ckpt, 'tensor')
    _, val = data.split_text(np.array(tok.encode(TEXT)), 0.1)
    assert m['val_loss'] == pytest.approx(tensorgpt.evaluate(model, data.tiled_windows(val, 8)), rel=1e-6)


ADAMW = ('--beta1', '0.9', '--beta2', '0.95', '--init-std', '0.02')  # AdamW's, --init microgpt's
LARGER = ('--weight-decay', '0.1', '--grad-clip', '0.5',
          '--warmup-steps', '4', '--lr-schedule', 'cosine', '--min-lr', '0.001',
          '--top-k', '5', '--lr', '0.02', '--norm', 'layernorm', '--position', 'rope',
          '--qk-norm', 'on', '--final-norm', 'on', '--activation', 'gelu', '--dropout', '0.1',
          '--qk-scale', '1.2', '--softcap', '15', '--norm-eps', '1e-06', '--bias', 'on',
          '--n-kv-head', '1', '--value-embeddings', 'on', '--residual-scalars', 'on', '--init',
          'nanochat', '--optimizer', 'muon', '--muon-schedule', 'nanochat')


def test_a_text_run_with_every_setting_reruns_and_resumes_bit_exact(text, capsys):
    assert train_text(text / 'a', *LARGER, '--rope-base', '100000', '--steps', '16') == 0
    config = json.loads((text / 'a' / 'config.json').read_text())
    assert (config['qk_scale'], config['softcap'], config['rope_base']) == (1.2, 15.0, 100000.0)
    assert (config['norm_eps'], config['bias'], config['n_kv_head'], config['value_embeddings'],
            config['residual_scalars'], config['init'], config['optimizer'], config['recipe']) == \
        (1e-6, True, 1, True, True, 'nanochat', 'muon', None)
    assert config['muon_schedule'] == 'nanochat'  # its momentum and decay at step 9, resumed
    assert (config['weight_decay'], config['grad_clip'], config['warmup_steps'], config['min_lr'],
            config['lr_schedule'], config['top_k'], config['norm'], config['position'],
            config['qk_norm'], config['dropout']) == \
        (0.1, 0.5, 4, 0.001, 'cosine', 5, 'layernorm', 'rope', True, 0.1)
    assert cli.main(['train', '--from', str(text / 'a'), '--out', str(text / 'b')]) == 0
    assert train_text(text / 'half', *LARGER, '--rope-base', '100000', '--steps', '16', '--stop-after', '9') == 0
    assert cli.main(['train', '--resume', str(text / 'half'), '--out', str(text / 'rest')]) == 0
    for run in ('b', 'rest'):
        assert losses_of(text / run) == losses_of(text / 'a'), run
        assert (text / run / 'samples.txt').read_text() == (text / 'a' / 'samples.txt').read_text()


def test_a_recipe_sets_its_settings_an_option_beside_it_wins_and_both_are_recorded(text, capsys):
    assert train_text(text / 'g', '--recipe', 'gpt2', '--activation', 'relu', '--steps', '3') == 0
    config = json.loads((text / 'g' / 'config.json').read_text())
    assert config['recipe'] == 'gpt2' and config['activation'] == 'relu'  # given: it stays
    assert {k: config[k] for k in settings.RECIPES['gpt2'] if k != 'activation'} == \
        {k: v for k, v in settings.RECIPES['gpt2'].items() if k != 'activation'}
    assert cli.main(['train', '--from', str(text / 'g'), '--out', str(text / 'g2')]) == 0
    assert losses_of(text / 'g2') == losses_of(text / 'g')
    code, _, err = main_output(cli.main, 'train', '--data', 'docs.txt', '--recipe', 'nanochat', '--out', 'r')
    assert code == 1 and one_line_error(err) and "--recipe nanochat's --optimizer muon needs --mode tensor" in err
    code, _, err = main_output(cli.main, 'train', '--data', 'docs.txt', '--recipe', 'nanochat', '--mode', 'tensor',
                               '--n-embd', '12', '--out', 'r')
    assert code == 1 and one_line_error(err) and "--recipe nanochat's --position rope turns pairs" in err
    code, _, err = main_output(cli.main, 'train', '--data', 'docs.txt', '--mode', 'tensor', '--optimizer', 'muon',
                               '--tie-lm-head', '--out', 'r')
    assert code == 1 and one_line_error(err) and '--tie-lm-head: --optimizer muon is nanochat' in err
    # nanochat's whole recipe, stopped and resumed: the same run
    assert train_text(text / 'n', '--recipe', 'nanochat', '--steps', '6') == 0
    assert train_text(text / 'n1', '--recipe', 'nanochat', '--steps', '6', '--stop-after', '3') == 0
    assert cli.main(['train', '--resume', str(text / 'n1'), '--out', str(text / 'n2')]) == 0
    assert losses_of(text / 'n2') == losses_of(text / 'n')
    assert json.loads((text / 'n' / 'config.json').read_text())['norm_eps'] == 2.0 ** -23


def test_each_setting_changes_the_run(text, capsys):
    every, bases = ADAMW + LARGER, {}
    for i, (option, value) in enumerate(zip(every[::2], every[1::2])):
        beside = ('--optimizer', 'muon') if option == '--muon-schedule' else ()  # what it acts beside
        if beside not in bases:
            bases[beside] = text / f"base{len(bases)}"
            train_text(bases[beside], '--steps', '6', *beside)
        base = bases[beside]
        train_text(text / f"r{i}", '--steps', '6', *beside, option, value)
        changed = losses_of(text / f"r{i}") != losses_of(base) or \
            (text / f"r{i}" / 'samples.txt').read_text() != (base / 'samples.txt').read_text()
        assert changed, option


def test_a_record_from_before_the_later_settings_reruns_with_their_defaults(small, capsys):
    train_small(small / 'a')
    path = small / 'a' / 'config.json'
    config = json.loads(path.read_text())
    for name in [name for name, s in settings.SETTINGS.items() if s.later]:
        config.pop(name)
    config.update(jobs=2, seeds=3)  # an ablation's options, which its runs recorded then
    path.write_text(json.dumps(config))
    assert cli.main(['train', '--from', str(small / 'a'), '--out', str(small / 'b')]) == 0
    assert losses_of(small / 'a') == losses_of(small / 'b')


@pytest.mark.parametrize('args', [
    ('--data-format', 'text'), ('--weight-decay', '0.1'), ('--grad-clip', '1'),
    ('--warmup-steps', '10'), ('--lr-schedule', 'cosine'), ('--min-lr', '0.001'),
    ('--dropout', '0.1'),  # microgpt.py's blocks have every other choice
    ('--optimizer', 'muon'), ('--muon-lr', '0.01'),
])
def test_scalar_mode_refuses_what_it_does_not_run(small, args):
    code, _, err = main_output(cli.main, 'train', '--data', 'docs.txt', *args, '--out', 'r')
    assert code == 1 and one_line_error(err) and 'needs --mode tensor' in err and args[0] in err
    assert not (small / 'r').exists()


def test_scalar_mode_runs_betas_init_std_and_top_k_as_tensor_mode_does(small, capsys):
    same = ('--beta1', '0.9', '--beta2', '0.95', '--init-std', '0.05', '--top-k', '3', '--steps', '8')
    train_small(small / 's', *same)
    train_small(small / 't', *same, '--mode', 'tensor', '--batch-size', '1', '--dtype', 'float64')
    s, t = (np.array([float(r['loss']) for r in csv.DictReader(open(small / run / 'losses.csv'))])
            for run in ('s', 't'))
    np.testing.assert_allclose(s, t, rtol=1e-12)
    assert (small / 's' / 'samples.txt').read_text() == (small / 't' / 'samples.txt').read_text()


@pytest.mark.parametrize('args, message', [
    (('--block-size', '2000'), "the text's training part"),
    (('--eval-every', '5', '--val-fraction', '0.01'), '--eval-every needs validation data'),
    (('--eval-every', '5', '--val-fraction', '0'), '--eval-every needs validation data'),
    (('--warmup-steps', '20', '--steps', '12'), '--warmup-steps (20) must be <= --steps (12)'),
    (('--val-docs', '5'), '--val-docs counts documents'),
    (('--min-lr', '1', '--lr', '0.1'), '--min-lr (1.0) must be <= --lr (0.1)'),
])
def test_text_settings_that_cannot_work_are_refused(text, args, message):
    code, _, err = main_output(cli.main, 'train', '--mode', 'tensor', '--data', 'text.txt',
                               '--data-format', 'text', *args, '--out', 'r')
    assert code == 1 and one_line_error(err) and message in err, err
    assert not (text / 'r').exists()


def test_without_matplotlib_a_run_says_how_to_get_its_picture(small, capsys, monkeypatch):
    from microgpt_lab import plots
    monkeypatch.setattr(plots, 'pyplot', lambda: None)
    assert train_small(small / 'run') == 0
    assert "losses.png skipped: matplotlib is not installed (pip install -e '.[plot]')" in \
        capsys.readouterr().out
    assert not (small / 'run' / 'losses.png').exists() and (small / 'run' / 'metrics.json').exists()


def test_a_picture_that_fails_leaves_the_run_completed(small, capsys, monkeypatch):
    from microgpt_lab import plots
    def broken(*args):
        raise ValueError('matplotlib could not draw this\nsecond line')
    monkeypatch.setattr(plots, 'run_losses', broken)
    assert train_small(small / 'run') == 0
    assert 'losses.png not written: matplotlib could not draw this' in capsys.readouterr().out
    assert metrics_of(small / 'run')['status'] == 'completed'


@pytest.mark.parametrize('mode', ['scalar', 'tensor'])
def test_weights_too_big_to_compute_diverge_in_one_line_without_numpys_warnings(small, mode):
    code, _, err = run_cli('train', '--data', 'docs.txt', '--mode', mode, '--init-std', '1e300',
                           '--steps', '3', '--n-embd', '8', '--n-head', '2', '--out', 'run',
                           cwd=small)
    assert code == 2 and err.count('\n') == 1 and 'Warning' not in err, err
    assert 'diverged at step 1; try a lower --lr or --init-std' in err


@pytest.fixture(scope='module')
def reference_blocks(tmp_path_factory):
    """The losses of train_small's run with the reference's blocks."""
    folder = tmp_path_factory.mktemp('reference-blocks')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    assert train_small(folder / 'r', data=folder / 'docs.txt') == 0
    return (folder / 'r' / 'losses.csv').read_text()


@pytest.mark.parametrize('option, value, recorded', [('--activation', 'relu2', 'relu2'),
                                                     ('--activation', 'gelu', 'gelu'),
                                                     ('--final-norm', 'on', True),
                                                     ('--norm', 'layernorm', 'layernorm'),
                                                     ('--position', 'none', 'none')])
def test_an_architecture_choice_is_recorded_and_both_modes_train_it_alike(small, capsys, option, value,
                                                                          recorded, reference_blocks):
    name = option[2:].replace('-', '_')
    assert train_small(small / 's', option, value) == 0
    assert train_small(small / 't', option, value, '--mode', 'tensor', '--dtype',
                       'float64', '--batch-size', '1') == 0
    assert json.loads((small / 's' / 'config.json').read_text())[name] == recorded
    assert checkpoint.load(small / 't' / 'checkpoint.json')['config'][name] == recorded
    losses = [[float(r['loss']) for r in csv.DictReader(open(small / run / 'losses.csv'))]
              for run in ('s', 't')]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    assert (small / 's' / 'samples.txt').read_text() == (small / 't' / 'samples.txt').read_text()
    assert reference_blocks != (small / 's' / 'losses.csv').read_text()  # the choice changes the run
    assert cli.main(['train', '--from', str(small / 's'), '--out', str(small / 'again')]) == 0
    assert (small / 'again' / 'losses.csv').read_text() == (small / 's' / 'losses.csv').read_text()
