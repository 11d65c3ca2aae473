"""tokens.py: a run's tokens (characters, BPE trained on its training part, or a
tokenizer.json), bits per byte by nanochat's definition, and the `tokenizer` command; a BPE
run's checkpoint decodes, resumes and re-runs on its own."""
import json
import math
import random

import numpy as np
import pytest

import bpe
import cli
import data
import microgpt
from microgpt_lab import checkpoint, models
from conftest import DOCS, main_output, one_line_error

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. "
        "resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n") * 6
NAMES = DOCS + ['zoé', 'chloë', 'anaïs', 'noé', 'léa', 'josé', 'inès', 'hélène']
TINY = ['--n-embd', '8', '--n-head', '2', '--block-size', '16', '--steps', '12']
TEXT_RUN = ['--mode', 'tensor', '--data', 'text.txt', '--data-format', 'text', '--batch-size', '4', *TINY]


@pytest.fixture
def files(small):
    (small / 'text.txt').write_text(TEXT)
    (small / 'names.txt').write_text('\n'.join(NAMES) + '\n')
    return small


def metrics_of(run):
    return json.loads((run / 'metrics.json').read_text())


def test_the_tokenizer_command_trains_on_the_training_part_as_train_splits_it(files):
    code, out, err = main_output(cli.main, 'tokenizer', '--data', 'text.txt', '--data-format', 'text',
                                 '--vocab-size', '300', '--out', 't')
    assert code == 0, err
    rec = json.loads((files / 't' / 'tokenizer.json').read_text())
    train, val = data.split_text(TEXT, 0.1)                  # the first 90% of the characters
    assert [tuple(m) for m in rec['merges']] == bpe.train([train], 44)
    assert rec['special'] == {} and rec['vocab_size'] == 300 and rec['pattern'] == bpe.PATTERNS['gpt4']
    tok = data.read_tokenizer('t', rec)
    assert (rec['train_tokens'], rec['val_tokens']) == (len(tok.encode(train)), len(tok.encode(val)))
    assert (rec['train_bytes'], rec['val_bytes']) == (len(train.encode()), len(val.encode()))
    assert rec['train_s'] >= 0 and rec['data_sha256'] == data.sha256(TEXT.encode())
    a, b = rec['merges'][0]
    assert f"merge  1: {chr(a)!r} + {chr(b)!r} -> {chr(a) + chr(b)!r}" in out
    assert f"training part: {rec['train_bytes']} bytes in {rec['train_tokens']} tokens" in out
    # documents: the split of --seed's shuffle, each document its own text, BOS the last id
    assert main_output(cli.main, 'tokenizer', '--data', 'names.txt', '--vocab-size', '270',
                       '--seed', '7', '--val-fraction', '0.25', '--out', 'n')[0] == 0
    rec = json.loads((files / 'n' / 'tokenizer.json').read_text())
    train_docs, _ = data.split_docs(NAMES, random.Random(7), 0.25)
    assert [tuple(m) for m in rec['merges']] == bpe.train(train_docs, 13)
    assert rec['special'] == {'<BOS>': 269} and (rec['seed'], rec['val_fraction']) == (7, 0.25)


@pytest.mark.parametrize('args, message', [
    (['--vocab-size', '256'], '--vocab-size 256 is below 257'),
    (['--vocab-size', '300', '--split-pattern', 'gpt5'], '--split-pattern must be gpt4 or gpt2 or none'),
    ([], 'tokenizer needs --vocab-size N'),
])
def test_bad_tokenizer_input_is_one_line_and_writes_nothing(files, args, message):
    code, _, err = main_output(cli.main, 'tokenizer', '--data', 'names.txt', '--out', 'bad', *args)
    assert code == 1 and one_line_error(err) and message in err, err
    assert not (files / 'bad').exists()


def test_a_vocabulary_larger_than_the_text_makes_stops_there_with_a_note(files):
    (files / 'ab.txt').write_text('ab ab ab\n')
    code, out, _ = main_output(cli.main, 'tokenizer', '--data', 'ab.txt', '--data-format', 'text',
                               '--val-fraction', '0', '--vocab-size', '1000', '--out', 't')
    assert code == 0 and 'note: the training part makes only 2 merges, not the 744' in out
    assert json.loads((files / 't' / 'tokenizer.json').read_text())['vocab_size'] == 258


def test_char_runs_give_bits_per_byte_as_loss_per_character_over_ln2(files):
    assert main_output(cli.main, 'train', *TEXT_RUN, '--eval-every', '6', '--out', 'c')[0] == 0
    m = metrics_of(files / 'c')                         # an ASCII text: a byte a character
    assert m['val_bpb'] == pytest.approx(m['val_loss'] / math.log(2), rel=1e-12)
    assert [len(e) for e in m['val_history']] == [4, 4]
    assert m['val_history'][0][3] == pytest.approx(m['val_history'][0][1] / math.log(2), rel=1e-12)


@pytest.mark.parametrize('mode', ['scalar', 'tensor'])
def test_bits_per_byte_sum_the_nats_of_the_targets_that_stand_for_bytes(files, mode):
    """Documents: the cross-entropy of every target but BOS (it stands for no byte), over
    ln 2 times their bytes, as nanochat's evaluate_bpb; each position's loss from the
    reference's own softmax."""
    assert main_output(cli.main, 'train', '--data', 'names.txt', '--tokenizer', 'bpe', '--vocab-size',
                       '262', '--samples', '2', '--mode', mode, *TINY, '--out', 'r')[0] == 0
    m, ckpt = metrics_of(files / 'r'), checkpoint.load(str(files / 'r' / 'checkpoint.json'))
    model, tok = models.from_checkpoint(ckpt, 'scalar')
    _, val_docs = data.split_docs(NAMES, random.Random(42), 0.1)
    framed, nats = [tok.frame(doc, 16) for doc in val_docs], 0.0
    for doc in framed:
        keys, values = model.kv_cache()
        for pos in range(len(doc) - 1):
            probs = microgpt.softmax(model(doc[pos], pos, keys, values))
            nats -= math.log(probs[doc[pos + 1]].data) if doc[pos + 1] != tok.bos else 0
    assert m['val_bpb'] == pytest.approx(nats / (math.log(2) * sum(len(d.encode()) for d in val_docs)),
                                         rel=1e-12 if mode == 'scalar' else 1e-5)
    if mode == 'scalar':  # one pass for both: the mean is microgpt.evaluate's, bit for bit
        assert m['val_loss'] == microgpt.evaluate(model, framed)
    assert m['val_loss'] == pytest.approx(microgpt.evaluate(model, framed), rel=1e-5)


def test_a_bpe_run_records_its_tokenizer_and_its_checkpoint_stands_alone(files, capsys):
    assert main_output(cli.main, 'train', *TEXT_RUN, '--tokenizer', 'bpe', '--vocab-size', '300',
                       '--length', '30', '--out', 'b')[0] == 0
    rec = json.loads((files / 'b' / 'tokenizer.json').read_text())
    assert [tuple(m) for m in rec['merges']] == bpe.train([data.split_text(TEXT, 0.1)[0]], 44)
    (files / 'alone').mkdir()
    (files / 'b' / 'checkpoint.json').rename(files / 'alone' / 'c.json')
    (files / 'text.txt').unlink()                           # sample needs no other file
    code, out, _ = main_output(cli.main, 'sample', '--checkpoint', 'alone/c.json', '--prompt', 'First',
                               '--length', '20')
    assert code == 0 and out.startswith('--- passage 1 ---\nFirst')
    code, out, _ = main_output(cli.main, 'attention', '--checkpoint', 'alone/c.json', '--text',
                               'First Citizen', '--png', 'a.png')
    assert code == 0 and 'First' in out and '␣Citizen' in out     # tokens, as text


def test_a_tokenizer_json_that_does_not_fit_the_data_is_one_line(files):
    assert main_output(cli.main, 'tokenizer', '--data', 'names.txt', '--vocab-size', '270', '--out', 't')[0] == 0
    path = str(files / 't' / 'tokenizer.json')
    names = ['--data', 'names.txt']
    for args, message in [([*names, '--seed', '1'], 'was trained on the training part of --val-fraction 0.1 --seed 42'),
                          (['--data', 'text.txt', '--data-format', 'text', '--mode', 'tensor'], 'trained on other data'),
                          ([*names, '--vocab-size', '300'], '--vocab-size is bpe')]:
        code, _, err = main_output(cli.main, 'train', '--tokenizer', path, *TINY, '--out', 'x', *args)
        assert code == 1 and one_line_error(err) and message in err, err
        assert not (files / 'x').exists()
    rec = json.loads((files / 't' / 'tokenizer.json').read_text())
    (files / 't' / 'tokenizer.json').write_text(json.dumps(dict(rec, merges=[[1, 999]])))
    code, _, err = main_output(cli.main, 'train', '--data', 'names.txt', '--tokenizer', path, '--out', 'x')
    assert code == 1 and one_line_error(err) and 'tokenizer.json: merges must be' in err
    assert main_output(cli.main, 'train', '--data', 'names.txt', '--tokenizer', 'bpe', '--out', 'x')[2] \
        == "error: --tokenizer bpe needs --vocab-size N: how many ids, the 256 bytes among them\n"


def test_a_bpe_run_resumes_and_reruns_bit_for_bit(files):
    assert main_output(cli.main, 'train', *TEXT_RUN, '--tokenizer', 'bpe', '--vocab-size', '300',
                       '--length', '10', '--out', 'whole')[0] == 0
    assert main_output(cli.main, 'train', *TEXT_RUN, '--tokenizer', 'bpe', '--vocab-size', '300',
                       '--length', '10', '--stop-after', '5', '--out', 'half')[0] == 0
    assert main_output(cli.main, 'train', '--resume', 'half', '--out', 'rest')[0] == 0
    assert main_output(cli.main, 'train', '--from', 'whole', '--out', 'again')[0] == 0
    merges = lambda run: json.loads((files / run / 'tokenizer.json').read_text())['merges']
    for run in ('rest', 'again'):
        for name in ('losses.csv', 'samples.txt'):
            assert (files / run / name).read_text() == (files / 'whole' / name).read_text(), (run, name)
        assert metrics_of(files / run)['val_bpb'] == metrics_of(files / 'whole')['val_bpb']
        assert merges(run) == merges('whole')


def test_an_ablation_varies_the_tokenizer_and_the_vocabulary_one_run_for_char(files):
    code, out, err = main_output(cli.main, 'ablate', *TEXT_RUN, '--samples', '0', '--variants', 'untied-norm',
                                 '--vary', 'tokenizer=char,bpe', '--vary', 'vocab-size=280,300',
                                 '--jobs', '1', '--out', 'ab')
    assert code == 0, err
    summary = json.loads((files / 'ab' / 'summary.json').read_text())
    assert [(c['tokenizer'], c['vocab_size']) for c in summary['variants']] == [
        ('char', 280), ('bpe', 280), ('bpe', 300)]
    table = (files / 'ab' / 'table.md').read_text()
    assert '| char | – | ' in table and 'val bpb | Δ val bpb vs the reference (95% CI) | tokens/s |' in table
    assert 'val loss' not in table                        # nats per token: not across tokenizers
    bpb = {(r['tokenizer'], r['vocab_size']): r['val_bpb'] for r in summary['runs']}
    assert summary['variants'][2]['bpb_delta'] is None and bpb[('bpe', 300)] != bpb[('char', 280)]


def test_a_bpe_passage_is_drawn_and_streamed_whole_characters(files):
    text = ('été à la plage, où ça? ' * 40)
    (files / 'fr.txt').write_text(text)
    assert main_output(cli.main, 'train', '--mode', 'tensor', '--data', 'fr.txt', '--data-format', 'text',
                       '--tokenizer', 'bpe', '--vocab-size', '258', *TINY, '--length', '40',
                       '--out', 'fr')[0] == 0
    code, out, _ = main_output(cli.main, 'sample', '--checkpoint', 'fr/checkpoint.json', '--length', '60')
    assert code == 0 and out.startswith('--- passage 1 ---\n')    # no crash on a cut character
    ckpt = checkpoint.load(str(files / 'fr' / 'checkpoint.json'))
    assert isinstance(ckpt['tok'], data.BPETokenizer) and ckpt['tok'].vocab_size == 258
    rec = json.loads((files / 'fr' / 'checkpoint.json').read_text())
    rec['tokenizer']['merges'] = [[0, 0], [0, 0], [1, 1]]
    (files / 'bad.json').write_text(json.dumps(rec))
    code, _, err = main_output(cli.main, 'sample', '--checkpoint', 'bad.json')
    assert code == 1 and one_line_error(err) and 'its tokenizer' in err
    assert np.isfinite(metrics_of(files / 'fr')['val_bpb'])


def test_a_tokenizer_path_is_recorded_whole_and_checked_for_every_seed_before_an_ablation(files, monkeypatch):
    assert main_output(cli.main, 'tokenizer', '--data', 'names.txt', '--vocab-size', '270', '--out', 't')[0] == 0
    assert main_output(cli.main, 'train', '--data', 'names.txt', '--tokenizer', 't/tokenizer.json', *TINY,
                       '--stop-after', '6', '--out', 'half')[0] == 0
    assert json.loads((files / 'half' / 'config.json').read_text())['tokenizer'] == str(files / 't' / 'tokenizer.json')
    (files / 'elsewhere').mkdir()
    monkeypatch.chdir(files / 'elsewhere')                   # --resume from another folder
    assert main_output(cli.main, 'train', '--resume', '../half', '--out', 'rest')[0] == 0
    monkeypatch.chdir(files)
    code, _, err = main_output(cli.main, 'ablate', '--data', 'names.txt', '--mode', 'tensor', *TINY,
                               '--variants', 'untied-norm', '--tokenizer', 't/tokenizer.json', '--seeds', '2',
                               '--jobs', '1', '--out', 'ab')
    assert code == 1 and one_line_error(err) and 'this run\'s (--val-fraction 0.1 --seed 43)' in err, err
    assert not (files / 'ab').exists()
    # a re-run whose tokenizer file has changed since: refused
    assert main_output(cli.main, 'tokenizer', '--data', 'names.txt', '--vocab-size', '265', '--out', 't2')[0] == 0
    (files / 't2' / 'tokenizer.json').replace(files / 't' / 'tokenizer.json')
    code, _, err = main_output(cli.main, 'train', '--from', 'half', '--out', 'again')
    assert code == 1 and one_line_error(err) and 'the file it was read from has changed' in err, err


def test_a_bpe_text_too_short_for_a_validation_window_is_one_line(files):
    code, _, err = main_output(cli.main, 'train', '--mode', 'tensor', '--data', 'text.txt', '--data-format',
                               'text', '--tokenizer', 'bpe', '--vocab-size', '400', '--block-size', '40',
                               '--out', 'x')  # 150 characters held out: 32 tokens
    assert code == 1 and one_line_error(err) and "validation part is" in err, err
    assert not (files / 'x').exists()
