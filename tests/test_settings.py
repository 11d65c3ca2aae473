"""settings.py: the one table of settings agrees with the usage (the manual), converts and
checks every value, and is what one reader checks every recorded config against."""
import re

import pytest

import cli
from microgpt_lab import UserError, checkpoint, grid, settings

RUN_SECTIONS = ('data', 'model', 'training', 'generation')  # the usage's headings of a run's


def usage_defaults():
    """{option: its '[default: ...]' in the usage, or None}, for every option of the usage."""
    defaults, current = {}, None
    for line in cli.__doc__.splitlines():
        if re.match(r'  --', line):
            current = line.split()[0]
            defaults[current] = None
        m = re.search(r'\[default: ([^\]]*)\]', line)
        if m and current:
            defaults[current] = m.group(1)
        if not line.strip():
            current = None
    return defaults


def test_every_setting_has_its_option_in_the_usage_and_every_run_option_is_a_setting():
    sections = cli.SECTIONS
    run_options = set().union(*(sections[s] for s in RUN_SECTIONS)) | {'--stop-after'}
    setting_options = {settings.option(name) for name in settings.SETTINGS} - {''}
    assert run_options - {'--out'} == setting_options
    assert {settings.option(n) for n in settings.COMMAND_OPTIONS} <= set().union(*sections.values())


@pytest.mark.parametrize('name', [*settings.SETTINGS, *settings.COMMAND_OPTIONS])
def test_the_usage_says_the_default_the_table_holds(name):
    s, opt = settings.SETTINGS.get(name) or settings.COMMAND_OPTIONS[name], settings.option(name)
    said = usage_defaults().get(opt)
    if not opt:  # no option: the reference's value, fixed
        assert name == 'eps' and s.default == 1e-8
    elif s.kind is bool and opt not in cli.TAKES_VALUE:  # a flag: absent, it leaves the default
        assert said is None and s.default is opt.startswith('--no-')
    elif name == 'mode':  # auto: scalar, but a text's samples are drawn in tensor mode
        assert said == 'auto' and s.default == 'scalar'
    elif said is None:  # the usage says it in words: --data's names.txt, --seed's 42, --top-k's all
        assert name in ('data', 'seed', 'top_k', 'stop_after', 'recipe', 'vocab_size'), name
    else:
        assert settings.convert(name, said, opt) == s.default, name


def test_model_settings_are_the_checkpoints_config_and_every_one_may_vary():
    assert settings.MODEL == ('n_embd', 'n_head', 'n_layer', 'block_size', 'tie_lm_head',
                              'input_rmsnorm', 'activation', 'final_norm', 'norm', 'norm_eps',
                              'position', 'qk_norm', 'qk_scale', 'rope_base', 'softcap', 'bias',
                              'n_kv_head', 'value_embeddings', 'residual_scalars', 'dropout')
    assert checkpoint.MODEL_KEYS == ('vocab_size', *settings.MODEL)
    assert set(grid.NOT_VARIED) == {'data', 'data_format', 'fetch', 'val_fraction', 'val_docs',
                                        'seed', 'eps', 'stop_after', 'out'}  # and nothing else:
    assert not set(settings.MODEL) & set(grid.NOT_VARIED)  # the variants are an axis too


# The recipes as they were written before they were named: tuples, in BEFORE's order.
BEFORE = ('tie_lm_head', 'input_rmsnorm', 'activation', 'final_norm', 'norm', 'norm_eps',
          'position', 'qk_norm', 'qk_scale', 'rope_base', 'softcap', 'bias', 'n_kv_head',
          'value_embeddings', 'residual_scalars', 'init', 'optimizer')
TUPLES = dict(
    microgpt=(False, True, 'relu', False, 'rmsnorm', 1e-5, 'learned', False, 1.0, 10000.0, 0.0,
              False, None, False, False, 'microgpt', 'adamw'),
    gpt2=(True, False, 'gelu', True, 'layernorm', 1e-5, 'learned', False, 1.0, 10000.0, 0.0,
          True, None, False, False, 'gpt2', 'adamw'),
    nanochat=(False, True, 'relu2', True, 'rmsnorm', 2.0 ** -23, 'rope', True, 1.2, 100000.0, 15.0,
              False, None, True, True, 'nanochat', 'muon'))


# Since issue 34, each recipe also sets its authors' optimizer settings, read from their code:
OPTIMIZERS = dict(
    microgpt=dict(beta1=0.85, beta2=0.99, weight_decay=0.0, grad_clip=0.0),  # microgpt.py's Adam
    gpt2=dict(beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0),  # nanoGPT's train.py, beta2
    #                                                 its config/train_shakespeare_char.py's
    nanochat=dict(muon_lr=0.02, weight_decay=0.28, muon_schedule='nanochat',  # base_train.py's
                  grad_clip=0.0))                                         # (it clips nothing)


@pytest.mark.parametrize('name', TUPLES)
def test_every_named_recipe_expands_to_exactly_the_values_of_its_tuple(name):
    defaults = {n: s.default for n, s in settings.SETTINGS.items()}
    expanded = settings.with_recipe(dict(defaults, recipe=name))
    before = dict(defaults, recipe=name, **dict(zip(BEFORE, TUPLES[name])), **OPTIMIZERS[name])
    assert repr(sorted(expanded.items())) == repr(sorted(before.items()))  # types too: 1.0, not 1
    assert set(settings.RECIPES[name]) == set(BEFORE) | set(OPTIMIZERS[name])
    assert set(OPTIMIZERS[name]) <= set(settings.OPTIMIZER)  # what another --optimizer drops


def test_none_is_the_one_word_for_no_recipe_and_all_for_every_token():
    assert settings.convert('recipe', 'none', '--recipe') is None
    assert settings.convert('top_k', 'all', '--top-k') is None
    for name, word in (('recipe', 'auto'), ('top_k', 'auto'), ('stop_after', 'auto')):
        with pytest.raises(UserError, match="got 'auto'"):
            settings.convert(name, word, settings.option(name))
    assert settings.convert('n_kv_head', 'auto', '--n-kv-head') is None  # its usage says auto


def test_a_recipes_setting_goes_back_to_its_default_when_the_one_it_needs_is_given_otherwise():
    defaults = {n: s.default for n, s in settings.SETTINGS.items()}
    cfg = settings.with_recipe(dict(defaults, recipe='nanochat', position='learned'), {'position'})
    assert (cfg['position'], cfg['rope_base'], cfg['qk_scale']) == ('learned', 10000.0, 1.2)
    cfg = settings.with_recipe(dict(defaults, recipe='nanochat', position='rope'), {'position'})
    assert cfg['rope_base'] == 100000.0  # given as the recipe has it: the recipe's base stays
    cfg = settings.with_recipe(dict(defaults, recipe='nanochat', rope_base=500.0, position='learned'),
                               {'position', 'rope_base'})
    with pytest.raises(UserError, match="--rope-base is rope's: it needs --position rope"):
        settings.check(cfg, settings.option)  # given both: the user's own conflict


def test_another_optimizer_beside_a_recipe_takes_none_of_the_recipes_optimizer_settings():
    defaults = {n: s.default for n, s in settings.SETTINGS.items()}
    cfg = settings.with_recipe(dict(defaults, recipe='nanochat', optimizer='adamw'), {'optimizer'})
    assert (cfg['weight_decay'], cfg['muon_schedule'], cfg['muon_lr'], cfg['qk_scale']) == (0.0, 'constant', 0.02, 1.2)
    cfg = settings.with_recipe(dict(defaults, recipe='gpt2', optimizer='muon'), {'optimizer'})
    assert (cfg['beta1'], cfg['weight_decay'], cfg['grad_clip'], cfg['norm']) == (0.85, 0.0, 0.0, 'layernorm')
    cfg = settings.with_recipe(dict(defaults, recipe='gpt2', optimizer='adamw', weight_decay=0.2),
                               {'optimizer', 'weight_decay'})  # the recipe's own optimizer: it stays
    assert (cfg['beta1'], cfg['weight_decay'], cfg['grad_clip']) == (0.9, 0.2, 1.0)


@pytest.mark.parametrize('changes, message', [
    (dict(optimizer='muon', beta1=0.9), "--beta1 is adamw's: it needs --optimizer adamw; with --optimizer muon"),
    (dict(optimizer='muon', beta2=0.95), '--beta2'),
    (dict(recipe='nanochat', beta1=0.9), "with --recipe nanochat's --optimizer muon it changes nothing"),
    (dict(muon_lr=0.03), "--muon-lr is muon's: it needs --optimizer muon; with --optimizer adamw"),
    (dict(muon_schedule='nanochat'), "--muon-schedule is muon's: it needs --optimizer muon"),
    (dict(init='gpt2', init_std=0.02), "--init-std is microgpt's: it needs --init microgpt"),
    (dict(recipe='gpt2', init_std=0.02), "with --recipe gpt2's --init gpt2 it changes nothing"),
])
def test_a_new_run_refuses_a_setting_that_would_change_nothing(changes, message):
    defaults = dict({n: s.default for n, s in settings.SETTINGS.items()}, mode='tensor')
    cfg = settings.with_recipe(dict(defaults, **changes), set(changes) - {'recipe'})
    with pytest.raises(UserError, match=re.escape(message)):
        settings.check_acting(cfg)
    settings.check(cfg, settings.option)  # a record may hold it: an ablation's base, acting elsewhere
    settings.check_acting(dict(defaults, **{k: v for k, v in changes.items()  # at its default: the same run
                                             if k not in ('beta1', 'beta2', 'muon_lr', 'init_std', 'muon_schedule')}))
