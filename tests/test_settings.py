"""settings.py: the one table of settings agrees with the usage (the manual), converts and
checks every value, and is what one reader checks every recorded config against."""
import re

import pytest

import cli
from microgpt_lab import ablation, checkpoint, settings
from microgpt_lab import UserError

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
    sections = cli.option_sections()
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
        assert name in ('data', 'seed', 'top_k', 'stop_after'), name
    else:
        assert settings.convert(name, said, opt) == s.default, name


def test_model_settings_are_the_checkpoints_config_and_the_variants_keep_two_fixed():
    assert settings.MODEL == ('n_embd', 'n_head', 'n_layer', 'block_size', 'tie_lm_head',
                              'input_rmsnorm', 'activation', 'final_norm', 'norm', 'position',
                              'qk_norm', 'dropout')
    assert checkpoint.MODEL_KEYS == ('vocab_size', *settings.MODEL)
    assert {n for n in ablation.NOT_VARIED if n in settings.SETTINGS} == \
        {n for n, s in settings.SETTINGS.items() if s.fixed} >= {'tie_lm_head', 'input_rmsnorm'}


@pytest.mark.parametrize('name, raw, message', [
    ('steps', '0', '--steps must be >= 1, got 0'),
    ('steps', '1.5', '--steps must be an integer'),
    ('lr', '0', '--lr must be > 0'),
    ('beta1', '1', '--beta1 must be >= 0 and < 1, got 1.0'),
    ('lr_schedule', 'step', "--lr-schedule must be linear or cosine, got 'step'"),
    ('jobs', '2000', '--jobs must be >= 1 and <= 1024'),
])
def test_convert_refuses_what_the_table_does_not_allow(name, raw, message):
    with pytest.raises(UserError, match=re.escape(message)):
        settings.convert(name, raw, settings.option(name))


def test_convert_types_values_and_auto_is_none_where_allowed():
    assert settings.convert('min_lr', '-0', '--min-lr') == 0.0
    assert str(settings.convert('min_lr', '-0', '--min-lr')) == '0.0'  # -0 is 0
    assert settings.convert('val_docs', 'auto', '--val-docs') is None
    assert settings.convert('n_embd', '32', '--n-embd') == 32


def defaults(**changes):
    """Every setting's default (in scalar mode, with its own batch and dtype), and changes."""
    table = {name: s.default for name, s in settings.SETTINGS.items()}
    return settings.scalar_values(dict(table, **changes))


def test_scalar_mode_refuses_a_tensor_only_setting_and_takes_its_own_values():
    for name, s in settings.SETTINGS.items():
        if 'scalar' not in s.modes:
            value = {'lr_schedule': 'cosine', 'data_format': 'text', 'min_lr': 0.001,
                         'dropout': 0.1}.get(name, 1)
            cfg = defaults(**{name: value})
            with pytest.raises(UserError, match='needs --mode tensor'):
                settings.check(cfg, settings.option)
    cfg = defaults(batch_size=64)
    assert (cfg['batch_size'], cfg['dtype']) == (1, 'float64')
    settings.check(cfg, settings.option)  # nothing to refuse


def test_the_reader_fills_later_settings_and_names_the_file_for_anything_else():
    recorded = {k: v for k, v in defaults().items() if not settings.SETTINGS[k].later}
    assert settings.read(recorded, 'c.json:') == defaults()
    with pytest.raises(UserError, match='c.json: n_embd is missing'):
        settings.read({k: v for k, v in recorded.items() if k != 'n_embd'}, 'c.json:')
    with pytest.raises(UserError, match='c.json: colour is not a setting of a run'):
        settings.read(dict(recorded, colour='red'), 'c.json:')
    assert settings.read(dict(recorded, out='x'), 'c.json:', extra=('out',)) == defaults()
    with pytest.raises(UserError, match='c.json: n_head must be >= 1'):
        settings.read(dict(recorded, n_head=0), 'c.json:')
    with pytest.raises(UserError, match='c.json: mode must be scalar or tensor'):
        settings.read(dict(recorded, mode='gpu'), 'c.json:')
