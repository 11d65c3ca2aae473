"""sampling.py: samples from a checkpoint repeat train's, follow the prompt, agree across
modes, and every bad input is a one-line error."""
import contextlib
import io
import json
import random
import subprocess
import sys

import numpy as np
import pytest

import cli
import data
import microgpt
from microgpt_lab import checkpoint, models, sampling
from conftest import ROOT, main_output, one_line_error, train_small


def sample(*args):
    return main_output(cli.main, 'sample', *args)


def continuations(out, prompt=''):
    lines = out.splitlines()
    assert all(line.startswith('sample ') and f": {prompt}" in line for line in lines)
    return [line.split(': ', 1)[1][len(prompt):] for line in lines]


def test_sample_without_a_seed_repeats_the_samples_train_printed(small, capsys, run):
    code, out, _ = sample('--checkpoint', small / 'run' / 'checkpoint.json', '--num', '3')
    assert code == 0 and continuations(out) == (small / 'run' / 'samples.txt').read_text().splitlines()


def test_a_prompt_conditions_the_samples(small, capsys):
    train_small(small / 'run', '--steps', '60')
    path = small / 'run' / 'checkpoint.json'
    code, out, _ = sample('--checkpoint', path, '--num', '8', '--prompt', 'ka', '--seed', '1')
    prompted = continuations(out, 'ka')
    _, out, _ = sample('--checkpoint', path, '--num', '8', '--seed', '1')
    unprompted = continuations(out)
    # the continuations are the model's, given the prompt's tokens: not the unprompted ones
    ckpt = checkpoint.load(path)
    tok = data.Tokenizer(ckpt['vocab'])
    model, _ = models.from_checkpoint(ckpt, 'scalar')
    rng = random.Random(1)
    expected = [tok.decode(microgpt.sample(model, rng, tok.bos, 0.5, tok.encode('ka'))) for _ in range(8)]
    assert code == 0 and prompted == expected and prompted != unprompted


def test_a_checkpoint_samples_the_same_in_both_modes(small, capsys, run):
    # scalar-trained, float64 weights
    outputs = [sample('--checkpoint', small / 'run' / 'checkpoint.json', '--num', '8',
                      '--mode', mode, '--prompt', 'a')[1] for mode in ('scalar', 'tensor')]
    assert outputs[0] == outputs[1] and outputs[0].count('sample') == 8


def test_batched_sampling_gives_the_asked_number_of_samples(small, capsys, run):
    for num in (6, 0):
        code, out, _ = sample('--checkpoint', small / 'run' / 'checkpoint.json', '--num', num,
                              '--mode', 'tensor', '--batched', '--prompt', 'd')
        assert code == 0 and len(continuations(out, 'd')) == num


def test_a_checkpoint_without_its_generator_needs_a_seed(small, capsys, run):
    path = small / 'run' / 'checkpoint.json'
    ckpt = json.loads(path.read_text())
    del ckpt['rng_state']
    path.write_text(json.dumps(ckpt))
    code, _, err = sample('--checkpoint', path)
    assert code == 1 and one_line_error(err) and 'give a --seed' in err
    assert sample('--checkpoint', path, '--seed', '3', '--num', '2')[0] == 0


def test_a_checkpoint_whose_model_overflows_is_a_clear_error(small, capsys, run):
    path = small / 'run' / 'checkpoint.json'
    ckpt = json.loads(path.read_text())
    w = checkpoint.decode_array(ckpt['weights']['lm_head'])
    ckpt['weights']['lm_head'] = checkpoint.encode_array(np.full_like(w, 1e308))
    path.write_text(json.dumps(ckpt))
    for mode in ('scalar', 'tensor'):
        code, _, err = sample('--checkpoint', path, '--mode', mode)
        assert code == 1 and one_line_error(err) and 'NaN probabilities' in err


def test_prompt_errors_are_one_line(small, capsys, run):
    path = small / 'run' / 'checkpoint.json'
    for prompt, message in (('kz', "'z' is not in the vocabulary"), ('a' * 16, 'at most 15'),
                            ('-a', "'-' is not in the vocabulary")):
        code, _, err = sample('--checkpoint', path, '--prompt', prompt)
        assert code == 1 and one_line_error(err) and message in err, err


# ---------------------------------------------------------------------------
# Passages of a text
@pytest.fixture(scope='module')
def text_run(tmp_path_factory):
    """A text's run record (tensor mode), made once; the tests only read it."""
    folder = tmp_path_factory.mktemp('text')
    (folder / 'text.txt').write_text("To be, or not to be: that is the question.\n" * 20)
    with contextlib.redirect_stdout(io.StringIO()):
        assert train_small(folder / 'run', '--mode', 'tensor', '--data-format', 'text', '--block-size',
                           '8', '--batch-size', '4', '--length', '30', data=folder / 'text.txt') == 0
    return folder / 'run'


def test_sample_without_a_seed_repeats_the_passage_train_printed(small, capsys, text_run):
    path = text_run / 'checkpoint.json'
    code, out, err = sample('--checkpoint', path, '--length', '30')  # tensor mode, for a text
    assert code == 0, err
    assert out.splitlines()[0] == '--- passage 1 ---'
    assert out.split('\n', 1)[1] == (text_run / 'samples.txt').read_text()


def test_a_passage_outgrows_the_context_and_follows_its_prompt(small, capsys, text_run):
    path = text_run / 'checkpoint.json'
    prompt = 'To be, or not to be: that'  # longer than the block size, 8
    code, out, _ = sample('--checkpoint', path, '--prompt', prompt, '--length', '50', '--num', '2',
                          '--seed', '4')
    passages = out.split('--- passage ')[1:]
    assert code == 0 and len(passages) == 2
    assert all(p.split('\n', 1)[1].startswith(prompt) and len(p.split('\n', 1)[1]) == len(prompt) + 50 + 1
               for p in passages)


def test_top_1_is_the_same_passage_whatever_the_seed(small, capsys, text_run):
    path = text_run / 'checkpoint.json'
    outs = {sample('--checkpoint', path, '--top-k', '1', '--seed', s, '--length', '20')[1]
            for s in (1, 2, 3)}
    assert len(outs) == 1


def test_a_text_checkpoint_refuses_scalar_mode_and_batches(small, capsys, text_run):
    path = text_run / 'checkpoint.json'
    for args in (('--mode', 'scalar'), ('--mode', 'tensor', '--batched')):
        code, _, err = sample('--checkpoint', path, *args)
        assert code == 1 and one_line_error(err) and 'tensor mode, one at a time' in err


def test_sample_stops_when_its_reader_has_gone(small, run):
    p = subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), 'sample', '--checkpoint',
                          'run/checkpoint.json', '--num', '10000000'], cwd=small, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = [p.stdout.readline(), p.stdout.readline()]
    p.stdout.close()  # as `| head -2` does when it has its lines
    assert p.wait(timeout=60) == 0 and p.stderr.read() == ''  # not ten million samples later
    assert all(line.startswith('sample ') for line in first)


def test_samples_that_cannot_be_written_are_an_error(small, run):
    with open('/dev/full', 'w') as full:  # a full disk: every write fails with ENOSPC
        p = subprocess.run([sys.executable, str(ROOT / 'cli.py'), 'sample', '--checkpoint',
                            'run/checkpoint.json'], cwd=small, stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    assert p.returncode == 1 and one_line_error(p.stderr) and 'No space left on device' in p.stderr


def test_a_sampled_document_keeps_to_one_line():
    """A byte-level model can draw a line break, which no document holds: U+FFFD instead."""
    tok = data.BPETokenizer([])
    assert sampling.document(tok, tok.encode('ab\ncd\r')) == 'ab\ufffdcd\ufffd'
