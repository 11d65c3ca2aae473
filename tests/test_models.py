"""models.py: the two models behind one interface: the same weights from the same settings,
their shapes known without building them, weights out and back in exactly, a stopped run's
state restored, and tensor mode's environment checked."""
import ast
import inspect
import random

import numpy as np
import pytest

import data
import microgpt
import tensorgpt
from microgpt_lab import UserError, checkpoint, models, settings

CHOICES = {  # architecture choices, by name
    'reference': {},
    'tied head': {'tie_lm_head': True},
    'no input rmsnorm': {'input_rmsnorm': False},
    'rope': {'position': 'rope'},
    'no position, 2 layers': {'position': 'none', 'n_layer': 2},
    'layernorm': {'norm': 'layernorm'},
    'layernorm, final norm, no input norm': {'norm': 'layernorm', 'final_norm': True, 'input_rmsnorm': False},
    'gelu, qk norm': {'activation': 'gelu', 'qk_norm': True},
    'biases': {'bias': True},
    'gpt2 init, 2 layers': {'init': 'gpt2', 'n_layer': 2},
    'nanochat init, value embeddings, MQA': {'init': 'nanochat', 'value_embeddings': True, 'n_layer': 3,
                                             'n_kv_head': 1},
    'residual scalars, norm eps': {'residual_scalars': True, 'n_layer': 2, 'norm_eps': 1e-7}}


def run_settings(mode='tensor', **choices):
    """A run's settings, as settings.py gives them, that build a small model."""
    cfg = dict({name: s.default for name, s in settings.SETTINGS.items()},
               mode=mode, dtype='float64', n_embd=8, n_head=2, n_layer=1, block_size=6,
               tie_lm_head=False, input_rmsnorm=True, activation='relu', final_norm=False,
               norm='rmsnorm', position='learned', qk_norm=False, dropout=0.0, init_std=0.08,
               beta1=0.85, beta2=0.99, eps=1e-8, weight_decay=0.0)
    return dict(cfg, **choices)


@pytest.mark.parametrize('choices', CHOICES.values(), ids=list(CHOICES))
def test_both_modes_build_the_same_weights_whose_shapes_are_known_beforehand(choices):
    scalar = models.build(run_settings('scalar', **choices), 7, random.Random(3))
    tensor = models.build(run_settings('tensor', **choices), 7, random.Random(3))
    ws, wt = models.weights(scalar), models.weights(tensor)
    assert list(ws) == list(wt) and all(np.array_equal(ws[n], wt[n]) for n in ws)
    shapes = models.weight_shapes(dict(run_settings(**choices), vocab_size=7))
    assert {n: w.shape for n, w in wt.items()} == shapes  # in the order they are made
    assert list(shapes) == list(wt)
    assert models.n_params(run_settings(**choices), 7) == sum(w.size for w in wt.values()) == len(scalar.params)
    assert {n: w.shape for n, w in tensorgpt.weight_table(tensor.config).items()} == shapes
    assert tensorgpt.weight_table(tensor.config) == microgpt.weight_table(scalar.config)  # roles too


@pytest.mark.parametrize('mode', ['scalar', 'tensor'])
def test_weights_go_out_and_back_in_exactly(mode):
    model = models.build(run_settings(mode, norm='layernorm'), 5, random.Random(0))
    other = models.build(run_settings(mode, norm='layernorm'), 5, random.Random(1))
    weights = models.weights(model)
    weights['wte'][0, 0] = np.nextafter(1.0, 2.0)
    models.load_weights(other, weights)
    assert all(np.array_equal(w, weights[n]) for n, w in models.weights(other).items())
    with pytest.raises(ValueError, match='wte: shape'):
        models.load_weights(other, dict(weights, wte=np.zeros((2, 2))))


def test_a_models_config_is_what_its_checkpoint_records():
    tensor = models.build(run_settings(dropout=0.1, qk_norm=True), 5, random.Random(0))
    scalar = models.build(run_settings('scalar', qk_norm=True), 5, random.Random(0))
    assert models.config_of(tensor) == dict(models.config_of(scalar), dropout=0.1)
    assert models.config_of(tensor)['qk_norm'] is True and models.config_of(tensor)['vocab_size'] == 5
    assert 'dtype' not in models.config_of(tensor) and 'init_std' not in models.config_of(tensor)


def test_weights_finite_sees_a_single_bad_weight():
    model = models.build(run_settings(), 5, random.Random(0))
    assert models.weights_finite(model)
    model.params[3].data[1, 2] = np.inf
    assert not models.weights_finite(model)
    scalar = models.build(run_settings('scalar'), 5, random.Random(0))
    scalar.params[-1].data = float('nan')
    assert not models.weights_finite(scalar)


MUON = dict(optimizer='muon', muon_lr=0.02, weight_decay=0.1, value_embeddings=True,
            residual_scalars=True, bias=True, norm='layernorm', n_layer=2, grad_clip=0.5)


@pytest.mark.parametrize('mode, more', [('scalar', {}), ('tensor', {}), ('tensor', MUON),
                                        ('tensor', dict(MUON, muon_schedule='nanochat'))],
                         ids=['scalar', 'tensor', 'tensor, Muon', "tensor, Muon on nanochat's schedules"])
def test_a_restored_run_trains_on_as_if_it_had_not_stopped(tmp_path, mode, more):
    """Weights, the optimizer's moments and step, and dropout's draws, from its checkpoint."""
    cfg = run_settings(mode, **dict(dict(steps=6, lr=0.01, batch_size=2, grad_clip=0.0, warmup_steps=0,
                       lr_schedule='linear', min_lr=0.0, dropout=0.2 if mode == 'tensor' else 0.0), **more))
    docs = [[4, 0, 1, 4], [4, 2, 3, 3, 4], [4, 1, 4]]
    whole = models.build(cfg, 5, random.Random(0))
    losses = [loss for _, loss, _ in models.train(cfg, whole, docs, models.optimizer(cfg, whole))]
    model = models.build(cfg, 5, random.Random(0))
    adam = models.optimizer(cfg, model)
    run = models.train(cfg, model, docs, adam)
    head = [next(run)[1] for _ in range(3)]
    (tmp_path / 'c.json').write_text(checkpoint.checkpoint_text(model, data.Tokenizer('abcd'), 3, random.Random(0), adam))
    model, adam = models.restore(cfg, checkpoint.load(tmp_path / 'c.json', need_adam=True))
    tail = [loss for _, loss, _ in models.train(cfg, model, docs, adam, start_step=3)]
    assert head + tail == losses


def test_a_numba_that_would_not_start_is_one_line(monkeypatch):
    monkeypatch.setenv('NUMBA_NUM_THREADS', '0')
    with pytest.raises(UserError, match='NUMBA_NUM_THREADS=0 in the environment'):
        models.lib('tensor')
    assert models.lib('scalar') is microgpt


def test_a_models_weights_are_microgpts_by_name_and_shape():
    """Written out by hand for one model (the models draw theirs from weight_table)."""
    config = dict(run_settings(norm='layernorm', final_norm=True, tie_lm_head=True,
                               position='rope', n_embd=4, n_head=2), vocab_size=5)
    assert models.weight_shapes(config) == {
        'wte': (5, 4), 'layer0.attn_wq': (4, 4), 'layer0.attn_wk': (4, 4), 'layer0.attn_wv': (4, 4),
        'layer0.attn_wo': (4, 4), 'layer0.mlp_fc1': (16, 4), 'layer0.mlp_fc2': (4, 16),
        'input_norm_gain': (1, 4), 'input_norm_bias': (1, 4),
        'layer0.attn_norm_gain': (1, 4), 'layer0.attn_norm_bias': (1, 4),
        'layer0.mlp_norm_gain': (1, 4), 'layer0.mlp_norm_bias': (1, 4),
        'final_norm_gain': (1, 4), 'final_norm_bias': (1, 4)}


# ---------------------------------------------------------------------------
# The models read as blocks: each choice settled when the model is built.
BUILD = ('__init__', 'choose')  # the methods that build; the rest run the model


@pytest.mark.parametrize('module, most_branches', [(tensorgpt, 6), (microgpt, 8)],
                         ids=['tensorgpt', 'microgpt'])
def test_the_model_reads_as_its_parts_with_few_branches_at_run_time(module, most_branches):
    """No method of GPT over 25 lines; the methods that run the model test the config at most
    6 times in all in tensorgpt.py, 8 in microgpt.py (issue 34; before it: 13 and 11)."""
    cls = next(n for n in ast.parse(inspect.getsource(module)).body if getattr(n, 'name', '') == 'GPT')
    methods = [m for m in cls.body if isinstance(m, ast.FunctionDef)]
    assert max(m.end_lineno - m.lineno + 1 for m in methods) <= 25
    branches = sum(isinstance(n, (ast.If, ast.IfExp)) for m in methods if m.name not in BUILD for n in ast.walk(m))
    assert branches <= most_branches
    assert {'embed', 'attention', 'mlp', 'head'} <= {m.name for m in methods}


def test_the_models_constraints_are_one_function_copied_alike_into_both_files():
    """microgpt.py keeps its own copy of problem() (it stands alone): the same text, the same
    answers, and GPTConfig raises what it says."""
    assert inspect.getsource(microgpt.problem) == inspect.getsource(tensorgpt.problem)
    bad = [dict(n_embd=6, n_head=4), dict(n_embd=6, n_head=2, position='rope'), dict(n_kv_head=3),
           dict(norm='batchnorm'), dict(init='xavier')]
    for choice in bad:
        fields = dict(tensorgpt.GPTConfig(5).__dict__, **choice)
        why = tensorgpt.problem(fields)
        assert why and why == microgpt.problem(fields)
        for module in (tensorgpt, microgpt):
            with pytest.raises(ValueError, match=why.replace('(', r'\(').replace(')', r'\)')):
                module.GPTConfig(5, **choice)
    assert tensorgpt.problem(tensorgpt.GPTConfig(5).__dict__) is None


def test_nanochats_weight_decay_is_its_own_at_its_reference_and_scales_as_base_train():
    """base_train.py: 0.28 sqrt(B / 2^19) (D_ref / D), D = 12 x (the blocks' matrices +
    lm_head), its learning rates times sqrt(B / 2^19); here the rates stay, and the decay takes
    both factors: 0.28 at nanochat's 12-layer reference (768 wide, heads of 128), B = 2^19."""
    cfg = settings.with_recipe(dict({n: s.default for n, s in settings.SETTINGS.items()},
                                    recipe='nanochat', mode='tensor'))
    d12 = dict(cfg, n_layer=12, n_embd=768, n_head=6, block_size=2048, batch_size=256)
    assert models.nanochat_weight_decay(d12, 65) == pytest.approx(0.28, rel=1e-15)
    ours = dict(cfg, n_layer=4, n_embd=128, n_head=4, block_size=64, batch_size=12)  # nanoGPT's CPU config
    gates = lambda L, K: L // 2 * K * 12   # value embeddings' gates: every other layer, 12 channels
    D_ref = 12 * 12 * 768 ** 2 + gates(12, 6) + 65 * 768
    D = 4 * 12 * 128 ** 2 + gates(4, 4) + 65 * 128
    lr_scale = (768 / 2 ** 19) ** 0.5   # nanochat's learning rates' at this batch
    decay = 0.28 * lr_scale * D_ref / D  # nanochat's decay at this batch and model: 1.146
    assert models.nanochat_weight_decay(ours, 65) == pytest.approx(decay * lr_scale, rel=1e-14)
    assert models.nanochat_weight_decay(ours, 65) == pytest.approx(0.04385, abs=1e-5)


def test_the_nanochat_recipes_muon_runs_base_trains_schedules_and_a_plain_one_none():
    defaults = dict({n: s.default for n, s in settings.SETTINGS.items()}, mode='tensor', steps=2000,
                    n_embd=128, n_head=4, n_layer=4, block_size=64, batch_size=12)
    cfg = settings.with_recipe(dict(defaults, recipe='nanochat'))
    opt = models.optimizer(cfg, models.build(cfg, 65, random.Random(0)))
    decay = models.nanochat_weight_decay(cfg, 65)
    assert (opt.momentum(0), opt.momentum(400), opt.weight_decay(0), opt.weight_decay(2000)) == \
        (0.85, 0.97, decay, pytest.approx(0))
    plain = models.optimizer(dict(cfg, muon_schedule='constant', weight_decay=0.1),
                             models.build(cfg, 65, random.Random(0)))
    assert (plain.momentum, plain.weight_decay) == (0.95, 0.1)
