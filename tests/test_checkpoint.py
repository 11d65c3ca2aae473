"""checkpoint.py: exact round trips, both modes reading one file, and a one-line error for
every way a checkpoint can be wrong."""
import json
import random

import numpy as np
import pytest

import cli
import data
import microgpt
import tensorgpt
from microgpt_lab import UserError, checkpoint, models
from conftest import DOCS, one_line_error, train_small


def gpt(mode, vocab_size, rng, **config):
    lib = microgpt if mode == 'scalar' else tensorgpt
    return lib.GPT(lib.GPTConfig(vocab_size, **config), rng)


def write(path, model, rng=None, step=0, chars='abc'):
    adam = models.lib_of(model).Adam(model.params)
    path.write_text(checkpoint.checkpoint_text(model, data.Tokenizer(chars), step, rng or random.Random(0), adam))
    return adam


def test_checkpoint_floats_are_exact_on_reload(tmp_path):
    model = gpt('scalar', 4, random.Random(5), n_embd=4, n_head=1)
    for p, x in zip(model.params, [np.nextafter(1.0, 2.0), 1e-310, -3.0e300]):
        p.data = x
    write(tmp_path / 'c.json', model)
    weights = checkpoint.load(tmp_path / 'c.json')['weights']
    assert {k: v.tolist() for k, v in weights.items()} == \
        {k: v.tolist() for k, v in models.weights(model).items()}


def test_adam_state_and_generator_round_trip(tmp_path):
    model = gpt('tensor', 4, random.Random(5), n_embd=4, n_head=1, dtype='float64')
    adam = tensorgpt.Adam(model.params)
    for i, (m, v) in enumerate(zip(adam.m, adam.v)):
        m[...], v[...] = i + 0.5, i + 0.25
    adam.t = 7
    rng = random.Random(11)
    rng.random()
    (tmp_path / 'c.json').write_text(checkpoint.checkpoint_text(model, data.Tokenizer('abc'), 7, rng, adam))
    ckpt = checkpoint.load(tmp_path / 'c.json', need_adam=True, need_rng=True)
    cfg = dict(ckpt['config'], mode='tensor', dtype='float64', beta1=0.85, beta2=0.99, eps=1e-8,
               weight_decay=0.0)
    _, fresh = models.restore(cfg, dict(ckpt, dropout_stream=None))
    assert fresh.t == 7 and all(np.array_equal(a, b) for a, b in zip(fresh.m + fresh.v, adam.m + adam.v))
    assert ckpt['rng'].random() == rng.random() and ckpt['step'] == 7


def test_checkpoint_pieces_make_json_dumps_own_text():
    """Written in pieces (one array's text in memory at a time), the checkpoint is the text
    json.dumps makes of the whole, dropout's stream included."""
    model = gpt('tensor', 4, random.Random(5), n_embd=4, n_head=1, dropout=0.5)
    adam = tensorgpt.Adam(model.params)
    adam.m[1][...] = 0.5
    text = checkpoint.checkpoint_text(model, data.Tokenizer('abc'), 3, random.Random(0), adam)
    ckpt = json.loads(text)
    assert text == json.dumps(ckpt) + '\n'
    assert ckpt['adam']['m']['wpe']['float64'] != ckpt['adam']['v']['wpe']['float64']
    assert ckpt['dropout_stream'] == [model.dropout_stream.seed, 0]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The checkpoint of a small run, made once for the tests that damage it (each a copy)."""
    folder = tmp_path_factory.mktemp('trained')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    assert train_small(folder / 'run', data=folder / 'docs.txt') == 0
    return folder / 'run' / 'checkpoint.json'


@pytest.mark.parametrize('mangle, message', [
    (lambda c: c.update(format='something else'), 'does not say it is one'),
    (lambda c: c.update(version=99), 'version 99'),
    (lambda c: c['config'].update(n_embd=12), 'has shape'),
    (lambda c: c['config'].update(n_head=3), 'config n_embd (8) must be divisible by n_head (3)'),
    (lambda c: c['config'].update(n_layer=2 ** 40), 'config n_layer'),
    (lambda c: c.update(vocab='ab'), 'vocabulary'),
    (lambda c: c.update(vocab='\n' + c['vocab'][1:]), 'holds a newline'),
    (lambda c: c.update(step=-1), 'step = -1'),
    (lambda c: c.update(step='3'), "step = '3'"),
    (lambda c: c['weights'].pop('wpe'), 'the weight names should be exactly'),
    (lambda c: c['weights']['wte'].update(float64='!!!'), 'weight wte is malformed'),
    (lambda c: c['weights']['wte'].update(float64='AAAA'), 'weight wte is malformed'),
    (lambda c: c['adam'].update(t='x'), 'Adam state is malformed'),
    (lambda c: c['adam']['m'].pop('wte'), 'Adam m names'),
    (lambda c: c.update(rng_state='x'), 'rng_state is not'),
    (lambda c: c.update(rng_state=[3, [0] * 624, None]), 'rng_state is not'),
    # a model setting that changes no shape, edited: the model would not be the run's
    (lambda c: c['config'].update(softcap=5.0), 'config softcap is 5.0, but its settings say 0.0'),
    (lambda c: c['config'].update(qk_scale=2.0), 'config qk_scale is 2.0, but its settings say 1.0'),
    (lambda c: c['config'].update(norm_eps=0.1), 'config norm_eps is 0.1, but its settings say 1e-05'),
    (lambda c: c['config'].update(activation='gelu'), 'config activation is "gelu", but its settings say "relu"'),
])
def test_a_malformed_or_mismatched_checkpoint_is_a_clear_error(small, capsys, trained, mangle, message):
    path = small / 'checkpoint.json'
    ckpt = json.loads(trained.read_text())
    mangle(ckpt)
    path.write_text(json.dumps(ckpt))
    capsys.readouterr()
    assert cli.main(['sample', '--checkpoint', str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and one_line_error(err)


def test_non_finite_weights_or_moments_are_refused(tmp_path):
    model = gpt('scalar', 4, random.Random(5), n_embd=4, n_head=1)
    model.params[2].data = float('nan')
    write(tmp_path / 'c.json', model)
    with pytest.raises(UserError, match='weight wte holds NaN or infinite values'):
        checkpoint.load(tmp_path / 'c.json')


def test_what_a_use_needs_must_be_there(tmp_path):
    model = gpt('scalar', 4, random.Random(5), n_embd=4, n_head=1)
    write(tmp_path / 'c.json', model)
    ckpt = json.loads((tmp_path / 'c.json').read_text())
    del ckpt['adam'], ckpt['rng_state']
    (tmp_path / 'c.json').write_text(json.dumps(ckpt))
    assert checkpoint.load(tmp_path / 'c.json')['adam'] is None  # enough to sample with a seed
    with pytest.raises(UserError, match='no Adam state'):
        checkpoint.load(tmp_path / 'c.json', need_adam=True)
    with pytest.raises(UserError, match='no rng_state'):
        checkpoint.load(tmp_path / 'c.json', need_rng=True)


def test_not_json_a_folder_or_nothing_is_a_clear_error(tmp_path):
    (tmp_path / 'c.json').write_text('{"format": ')
    for path, message in ((tmp_path / 'c.json', 'not readable JSON'),
                          (tmp_path, 'is a directory'), (tmp_path / 'none.json', 'not found')):
        with pytest.raises(UserError, match=message):
            checkpoint.load(path)


def test_a_scalar_checkpoint_gives_the_tensor_model_the_same_logits(tmp_path):
    scalar = gpt('scalar', 6, random.Random(2), n_embd=8, n_head=2)
    list(microgpt.train(scalar, [[5, 0, 1, 2, 5], [5, 3, 4, 5]], 5))
    write(tmp_path / 'c.json', scalar, chars='abcde')
    tensor, _ = models.from_checkpoint(checkpoint.load(tmp_path / 'c.json'), 'tensor')
    ids = [5, 0, 1]
    keys, values = [[]], [[]]
    expected = [[v.data for v in scalar(t, p, keys, values)] for p, t in enumerate(ids)]
    got = tensor.forward(np.array(ids), np.arange(3), np.array([0, 3])).data
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize('choices', [
    {}, {'norm': 'layernorm'}, {'norm': 'layernorm', 'final_norm': True, 'input_rmsnorm': False},
    {'position': 'rope', 'tie_lm_head': True}, {'position': 'none', 'norm': 'layernorm', 'n_layer': 2}])
def test_the_checkpoint_expects_each_models_weights_by_name_and_shape(tmp_path, choices):
    config = dict(vocab_size=4, n_embd=4, n_head=2, n_layer=1, block_size=3, tie_lm_head=False,
                  input_rmsnorm=True, final_norm=False, norm='rmsnorm', position='learned')
    config.update(choices)
    expected = models.weight_shapes(config)
    for mode in ('scalar', 'tensor'):
        model = gpt(mode, 4, random.Random(0), **{k: v for k, v in config.items() if k != 'vocab_size'})
        assert {n: np.shape(w) for n, w in models.weights(model).items()} == expected, mode
    write(tmp_path / 'c.json', model, chars='abc')
    assert checkpoint.load(tmp_path / 'c.json')['weights'].keys() == expected.keys()


def test_a_dropout_run_keeps_its_draws_in_the_checkpoint(tmp_path):
    model = gpt('tensor', 4, random.Random(0), n_embd=4, n_head=2, dropout=0.1)
    model.dropout_stream.count = 12345
    adam = write(tmp_path / 'c.json', model)
    assert checkpoint.load(tmp_path / 'c.json')['dropout_stream'] == [model.dropout_stream.seed, 12345]
    ckpt = json.loads((tmp_path / 'c.json').read_text())
    del ckpt['dropout_stream']
    (tmp_path / 'c.json').write_text(json.dumps(ckpt))
    with pytest.raises(UserError, match='no dropout_stream, which continuing'):
        checkpoint.load(tmp_path / 'c.json', need_adam=True)
    assert adam.t == 0
