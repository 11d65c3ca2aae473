"""settings.py: the one table of settings agrees with the usage (the manual), converts and
checks every value, and is what one reader checks every recorded config against."""
import re

import pytest

import cli
from microgpt_lab import UserError, ablation, checkpoint, settings

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
        assert name in ('data', 'seed', 'top_k', 'stop_after', 'recipe'), name
    else:
        assert settings.convert(name, said, opt) == s.default, name


def test_model_settings_are_the_checkpoints_config_and_every_one_may_vary():
    assert settings.MODEL == ('n_embd', 'n_head', 'n_layer', 'block_size', 'tie_lm_head',
                              'input_rmsnorm', 'activation', 'final_norm', 'norm', 'norm_eps',
                              'position', 'qk_norm', 'qk_scale', 'rope_base', 'softcap', 'bias',
                              'n_kv_head', 'value_embeddings', 'residual_scalars', 'dropout')
    assert checkpoint.MODEL_KEYS == ('vocab_size', *settings.MODEL)
    assert set(ablation.NOT_VARIED) == {'data', 'data_format', 'fetch', 'val_fraction', 'val_docs',
                                        'seed', 'eps', 'stop_after', 'out'}  # and nothing else:
    assert not set(settings.MODEL) & set(ablation.NOT_VARIED)  # the variants are an axis too


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


@pytest.mark.parametrize('name', TUPLES)
def test_every_named_recipe_expands_to_exactly_the_values_of_its_tuple(name):
    defaults = {n: s.default for n, s in settings.SETTINGS.items()}
    expanded = settings.with_recipe(dict(defaults, recipe=name))
    before = dict(defaults, recipe=name, **dict(zip(BEFORE, TUPLES[name])))
    assert repr(sorted(expanded.items())) == repr(sorted(before.items()))  # types too: 1.0, not 1
    assert set(settings.RECIPES[name]) == set(BEFORE) == set(settings.BLOCKS)


def test_none_is_the_one_word_for_no_recipe_and_all_for_every_token():
    assert settings.convert('recipe', 'none', '--recipe') is None
    assert settings.convert('top_k', 'all', '--top-k') is None
    for name, word in (('recipe', 'auto'), ('top_k', 'auto'), ('stop_after', 'auto')):
        with pytest.raises(UserError, match="got 'auto'"):
            settings.convert(name, word, settings.option(name))
    assert settings.convert('n_kv_head', 'auto', '--n-kv-head') is None  # its usage says auto
