"""
settings.py: every setting of a run, defined once.

A setting has a name (config.json's), a type, a default, the values it allows, the modes
that take it, and its option on the command line (`--n-embd`, or a flag). This one table is
what cli.py converts its options by, what a run records in config.json, what `ablate --vary`
may vary, and what every recorded config is checked against when it is read back (`train
--from`, `--resume`, `ablate --resume`), by the one reader at the end of this file. The model
settings (part='model') also build the model and describe it in its checkpoint.

Adding a setting takes its line in cli.py's usage, its entry here, and the model code that
uses it.
"""
import json
import math
import os
from typing import NamedTuple

import data
import microgpt
from microgpt_lab import UserError


class Setting(NamedTuple):
    kind: object            # int, float, bool, str, or a tuple of the allowed strings
    default: object = None  # what a run takes when not told, and what records older than
    #                         the setting ran with (see `later`)
    low: float = None       # the smallest number allowed
    high: float = None      # the largest
    above: bool = False     # low itself is not allowed: the value must be > low
    below: bool = False     # high itself is not allowed
    optional: bool = False  # None is allowed
    none: str = 'auto'      # the command line's word for None, if optional (None: no word)
    modes: tuple = ('scalar', 'tensor')  # the modes that take any value; the others
    #                         run the default (or `scalar`) and refuse the rest
    scalar: object = None   # scalar mode's own value, which it sets whatever is given
    part: str = 'run'       # 'model': it builds the model and is in its checkpoint
    option: str = None      # on the command line; default --NAME, '' for none
    fixed: str = None       # why `ablate --vary` keeps it fixed (None: it may vary it)
    later: bool = False     # came after the first records: one without it ran with the default
    needs: tuple = None     # (setting, value): it acts only beside that value; else it
    #                         changes nothing, and a value given for it is refused


SAME_VALIDATION = 'cells are compared on one validation set'
SCALAR_BLOCKS = "microgpt.py's blocks have no such choice"
REFERENCE_OPTIMIZER = "scalar mode trains on documents with the reference's optimizer and schedule"

SETTINGS = dict(
    # the data
    data=Setting(str, data.NAMES, fixed=SAME_VALIDATION),
    data_format=Setting(data.FORMATS, 'lines', modes=('tensor',), fixed=SAME_VALIDATION,
                        later=True),
    fetch=Setting(bool, True, option='--no-fetch', fixed='it is a flag, with no value'),
    val_fraction=Setting(float, 0.1, 0, 0.99, fixed=SAME_VALIDATION),
    # the tokens: characters, BPE trained on the run's training part, or a tokenizer.json
    tokenizer=Setting(str, 'char', later=True),
    vocab_size=Setting(int, None, 1, optional=True, later=True, needs=('tokenizer', 'bpe')),
    split_pattern=Setting(data.SPLIT_PATTERNS, 'gpt4', later=True, needs=('tokenizer', 'bpe')),
    # the model
    mode=Setting(('scalar', 'tensor'), 'scalar'),
    dtype=Setting(('float32', 'float64'), 'float32', scalar='float64'),
    n_embd=Setting(int, 16, 1, part='model'),
    n_head=Setting(int, 4, 1, part='model'),
    n_layer=Setting(int, 1, 1, part='model'),
    block_size=Setting(int, 16, 1, part='model'),
    tie_lm_head=Setting(bool, False, part='model'),
    input_rmsnorm=Setting(bool, True, part='model', option='--no-input-rmsnorm'),
    activation=Setting(('relu', 'relu2', 'gelu'), 'relu', part='model', later=True),
    final_norm=Setting(bool, False, part='model', later=True),  # --final-norm on|off
    norm=Setting(('rmsnorm', 'layernorm'), 'rmsnorm', part='model', later=True),
    norm_eps=Setting(float, 1e-5, 0, above=True, part='model', later=True),
    position=Setting(('learned', 'rope', 'none'), 'learned', part='model', later=True),
    qk_norm=Setting(bool, False, part='model', later=True),  # --qk-norm on|off
    qk_scale=Setting(float, 1.0, 0, above=True, part='model', later=True),
    rope_base=Setting(float, 10000.0, 0, above=True, part='model', later=True,
                      needs=('position', 'rope')),
    softcap=Setting(float, 0.0, 0, part='model', later=True),
    bias=Setting(bool, False, part='model', later=True),  # --bias on|off
    n_kv_head=Setting(int, None, 1, optional=True, part='model', later=True),  # None: n_head
    value_embeddings=Setting(bool, False, part='model', later=True),
    residual_scalars=Setting(bool, False, part='model', later=True),
    dropout=Setting(float, 0.0, 0, 1, below=True, modes=('tensor',), part='model', later=True),
    init=Setting(('microgpt', 'gpt2', 'nanochat'), 'microgpt', later=True),
    init_std=Setting(float, 0.08, 0, above=True, later=True, needs=('init', 'microgpt')),
    recipe=Setting(('microgpt', 'gpt2', 'nanochat'), None, optional=True, none='none',
                   later=True),  # see RECIPES
    # training
    seed=Setting(int, 42, 0, fixed='the seeds are --seeds'),
    steps=Setting(int, 1000, 1),
    batch_size=Setting(int, 32, 1, scalar=1),
    lr=Setting(float, 0.01, 0, above=True),
    optimizer=Setting(('adamw', 'muon'), 'adamw', modes=('tensor',), later=True),
    muon_lr=Setting(float, 0.02, 0, above=True, modes=('tensor',), later=True,
                    needs=('optimizer', 'muon')),
    muon_schedule=Setting(('constant', 'nanochat'), 'constant', modes=('tensor',), later=True,
                          needs=('optimizer', 'muon')),
    lr_schedule=Setting(('linear', 'cosine'), 'linear', modes=('tensor',), later=True),
    warmup_steps=Setting(int, 0, 0, modes=('tensor',), later=True),
    min_lr=Setting(float, 0.0, 0, modes=('tensor',), later=True),
    beta1=Setting(float, 0.85, 0, 1, below=True, needs=('optimizer', 'adamw')),  # Muon's
    beta2=Setting(float, 0.99, 0, 1, below=True, needs=('optimizer', 'adamw')),  # groups: nanochat's
    eps=Setting(float, 1e-8, 0, above=True, option='', fixed='it is not an option'),
    weight_decay=Setting(float, 0.0, 0, modes=('tensor',), later=True),  # no cap: --muon-schedule
    #                                                     nanochat scales it down
    grad_clip=Setting(float, 0.0, 0, modes=('tensor',), later=True),
    eval_every=Setting(int, 0, 0),
    val_docs=Setting(int, None, 1, optional=True, fixed=SAME_VALIDATION),
    last_n=Setting(int, 100, 1),
    log_every=Setting(int, None, 1, optional=True),
    # the machine: how many threads BLAS and numba run (None: the cores; ablate: 1 a run).
    # BLAS's count changes how a matrix product's sums round, so it is a setting.
    threads=Setting(int, None, 1, 1024, optional=True, later=True),
    # generation
    samples=Setting(int, 20, 0),
    length=Setting(int, 500, 0, later=True),
    temperature=Setting(float, 0.5, 0.001, 1000),
    top_k=Setting(int, None, 1, optional=True, none='all', later=True),
    # stopping
    stop_after=Setting(int, None, 1, optional=True, none=None, fixed='an ablation runs to the end'),
)
MODEL = tuple(name for name, s in SETTINGS.items() if s.part == 'model')
CHOICES = ('activation', 'final_norm', 'norm', 'norm_eps', 'position', 'qk_norm', 'qk_scale',
           'rope_base', 'softcap', 'bias', 'n_kv_head', 'value_embeddings', 'residual_scalars',
           'dropout')  # the blocks'

# The recipes, by name: every setting that makes each one's model and optimizer (steps, batch,
# schedule and dropout stay the user's). `--recipe` sets them all (an option given beside it
# still wins), and a run records the recipe beside the settings it expanded to.
# docs/choices.md says what each leaves out of its authors' code.
RECIPES = dict(
    # the reference's blocks: Karpathy's microgpt.py, which microgpt.py re-creates; its Adam
    microgpt=dict(
        tie_lm_head=False, input_rmsnorm=True, activation='relu', final_norm=False,
        norm='rmsnorm', norm_eps=1e-5, position='learned', rope_base=10000.0,
        qk_norm=False, qk_scale=1.0, softcap=0.0, bias=False, n_kv_head=None,
        value_embeddings=False, residual_scalars=False, init='microgpt',
        optimizer='adamw', beta1=0.85, beta2=0.99, weight_decay=0.0, grad_clip=0.0),
    # GPT-2's blocks, as nanoGPT's model.py at 3adf61e has them, with bias=True as GPT-2's
    # checkpoints: lm_head tied to wte, no norm of the embeddings, LayerNorm, GELU (tanh form),
    # learned positions, ln_f; its _init_weights; and AdamW as its train.py with its
    # Shakespeare config (config/train_shakespeare_char.py) runs it
    gpt2=dict(
        tie_lm_head=True, input_rmsnorm=False, activation='gelu', final_norm=True,
        norm='layernorm', norm_eps=1e-5, position='learned', rope_base=10000.0,
        qk_norm=False, qk_scale=1.0, softcap=0.0, bias=True, n_kv_head=None,
        value_embeddings=False, residual_scalars=False, init='gpt2',
        optimizer='adamw', beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0),
    # nanochat's gpt.py and optim.py at 92d63d4 (2026-07-03): its rms_norm's eps is
    # float32's; RoPE at base 100000; QK-norm, then q and k times 1.2; logits softcapped at
    # 15; its configs have as many kv heads as heads; value embeddings and the residual
    # scalars; its init_weights; and Muon with AdamW (MuonAdamW) as its base_train.py runs
    # it: matrix_lr 0.02, weight decay 0.28 scaled, momentum and decay on its schedules
    nanochat=dict(
        tie_lm_head=False, input_rmsnorm=True, activation='relu2', final_norm=True,
        norm='rmsnorm', norm_eps=2.0 ** -23, position='rope', rope_base=100000.0,
        qk_norm=True, qk_scale=1.2, softcap=15.0, bias=False, n_kv_head=None,
        value_embeddings=True, residual_scalars=True, init='nanochat',
        optimizer='muon', muon_lr=0.02, weight_decay=0.28, muon_schedule='nanochat', grad_clip=0.0))
OPTIMIZER = ('beta1', 'beta2', 'muon_lr', 'muon_schedule', 'weight_decay', 'grad_clip')  # a recipe's


def with_recipe(cfg, given=()):
    """cfg with its recipe's settings (if it names one), less those in `given` (set apart
    from the recipe: given on the command line, or varied by an ablation's other axes). A
    recipe's setting that acts only beside one of those, given otherwise, goes back to its
    default: nanochat's rope base, beside --position learned. So does a recipe's optimizer,
    whole, beside another --optimizer: nanochat's decay of 0.28 is for its Muon, scaled."""
    recipe = RECIPES.get(cfg['recipe'], {})
    if 'optimizer' in given and cfg['optimizer'] != recipe.get('optimizer', cfg['optimizer']):
        recipe = {name: value for name, value in recipe.items() if name not in OPTIMIZER}
    cfg = dict(cfg, **{name: value for name, value in recipe.items() if name not in given})
    return dict(cfg, **{name: SETTINGS[name].default for name in idle(cfg)
                        if name in recipe and name not in given})


def idle(cfg):
    """The settings that change nothing in cfg: each acts only beside another setting's
    value (its `needs`), which cfg does not have (beta1 with Muon: nanochat's groups have
    their own betas)."""
    return [name for name, s in SETTINGS.items() if s.needs and cfg[s.needs[0]] != s.needs[1]]


def check_acting(cfg):
    """A UserError for the first setting of a new run that is set (not at its default) but
    changes nothing in it (see idle): --beta1 under --optimizer muon. Only a new run's are
    checked, whose values the user gave: an ablation's base settings may act in some of its
    cells only, and a record may hold them (a model's are checked with the rest, in check)."""
    recipe = RECIPES.get(cfg['recipe'], {})
    for name in idle(cfg):
        if cfg[name] != SETTINGS[name].default:
            parent = SETTINGS[name].needs[0]
            by = f"--recipe {cfg['recipe']}'s " if recipe.get(parent) == cfg[parent] else ''
            raise UserError(f"{needs(name, option)}; with {by}{option(parent)} {cfg[parent]} "
                            "it changes nothing")


def needs(name, name_of):
    """What a setting that acts only beside another's value needs, in words."""
    parent, value = SETTINGS[name].needs
    return f"{name_of(name)} is {value}'s: it needs {name_of(parent)} {value}"


SCALAR_OWN = {name: s.scalar for name, s in SETTINGS.items() if s.scalar is not None}

# The options of commands, which no run records.
COMMAND_OPTIONS = dict(
    num=Setting(int, None, 0, optional=True), seeds=Setting(int, 1, 1, 10000),
    jobs=Setting(int, None, 1, 1024, optional=True), bench_steps=Setting(int, 100, 1),
    warmup=Setting(int, 10, 0), repeats=Setting(int, 3, 1),
    design=Setting(('product', 'alone', 'path'), 'product'))


def option(name):
    """A setting's option on the command line: '--n-embd', a flag ('--no-fetch'), or ''."""
    s = SETTINGS.get(name) or COMMAND_OPTIONS.get(name)
    return '--' + name.replace('_', '-') if s is None or s.option is None else s.option


# ---------------------------------------------------------------------------
# Checking a value, and a run's settings together
def problem(s, value):
    """Why `value` breaks the Setting s, as a phrase ('must be >= 1, got 0'), or None."""
    if value is None:
        return None if s.optional else "must be given"
    if isinstance(s.kind, tuple):
        words = s.kind + ((s.none,) if s.optional and s.none else ())  # recipe: or none
        return None if value in s.kind else f"must be {' or '.join(words)}, got {value!r}"
    if s.kind in (bool, str):
        return None if type(value) is s.kind else \
            f"must be {'true or false' if s.kind is bool else 'a string'}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int if s.kind is int else (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)):
        return f"must be {'an integer' if s.kind is int else 'a finite number'}, got {value!r}"
    if s.kind is int and abs(value) >= 2 ** 63:
        return f"must be below 2**63, got {str(value)[:12]}... ({len(str(value))} digits)"
    too_low = s.low is not None and (value <= s.low if s.above else value < s.low)
    too_high = s.high is not None and (value >= s.high if s.below else value > s.high)
    if too_low or too_high:
        bounds = [f"{'>' if s.above else '>='} {s.low}" if s.low is not None else None,
                  f"{'<' if s.below else '<='} {s.high}" if s.high is not None else None]
        return f"must be {' and '.join(b for b in bounds if b)}, got {value}"
    return None


def convert(name, raw, opt):
    """The command line's string raw for setting (or command option) `name`, given as opt,
    converted to its type and checked."""
    s = SETTINGS.get(name) or COMMAND_OPTIONS[name]
    if s.optional and (raw is None or raw == s.none):
        return None
    if s.kind is bool:  # a switch that takes a value (--final-norm on), not a flag
        if raw not in ('on', 'off'):
            raise UserError(f"{opt} must be on or off, got {raw!r}")
        return raw == 'on'
    if s.kind in (int, float):
        try:
            raw = s.kind(raw) + s.kind(0)  # + 0.0 makes -0.0 the 0.0 it means
        except ValueError:
            raise UserError(f"{opt} must be {'an integer' if s.kind is int else 'a number'}, "
                            f"got {raw!r}") from None
    why = problem(s, raw)
    if why:
        raise UserError(f"{opt} {why}")
    if name == 'tokenizer' and raw not in ('char', 'bpe'):  # a tokenizer.json: recorded absolute,
        return os.path.abspath(raw)                          # as the data, for --resume and --from
    return raw


def check(cfg, name_of):
    """Raise a UserError for the first setting of cfg that is not allowed, alone or with the
    others. name_of(setting) is how the user knows it: '--n-embd', or 'config.json: n_embd'."""
    for name, s in SETTINGS.items():
        why = problem(s, cfg[name])
        if why:
            raise UserError(f"{name_of(name)} {why}")
    why = microgpt.problem(cfg, name_of)  # the model's constraints: the model's own check
    if why:
        raise UserError(why)
    if cfg['tie_lm_head'] and (cfg['optimizer'] == 'muon' or cfg['init'] == 'nanochat'):
        why = 'its AdamW groups give wte and lm_head learning rates 37 times apart' \
            if cfg['optimizer'] == 'muon' else 'it draws wte with std 0.8 and lm_head with 0.001'
        raise UserError(f"{name_of('tie_lm_head')}: {name_of('optimizer' if cfg['optimizer'] == 'muon' else 'init')} "
                        f"{cfg['optimizer'] if cfg['optimizer'] == 'muon' else 'nanochat'} is nanochat's, whose "
                        f"lm_head is its own: {why}")
    for name in idle(cfg):  # a model's setting that changes nothing would misdescribe it
        if SETTINGS[name].part == 'model' and cfg[name] != SETTINGS[name].default:
            raise UserError(needs(name, name_of))
    if cfg['tokenizer'] == 'bpe' and cfg['vocab_size'] is None:
        raise UserError(f"{name_of('tokenizer')} bpe needs {name_of('vocab_size')} N: how many ids, "
                        "the 256 bytes among them")
    least = 256 + (cfg['data_format'] == 'lines')  # every byte, and BOS for documents
    if cfg['tokenizer'] == 'bpe' and cfg['vocab_size'] < least:
        raise UserError(f"{name_of('vocab_size')} {cfg['vocab_size']} is below {least}: the 256 bytes"
                        f"{' and BOS' if least > 256 else ''} are every byte-level vocabulary's")
    if cfg['tokenizer'] not in ('char', 'bpe') and not cfg['tokenizer'].endswith('.json'):
        raise UserError(f"{name_of('tokenizer')} must be char, bpe or a tokenizer.json, "
                        f"got {cfg['tokenizer']!r}")
    if cfg['min_lr'] > cfg['lr']:
        raise UserError(f"{name_of('min_lr')} ({cfg['min_lr']}) must be <= {name_of('lr')} ({cfg['lr']})")
    if cfg['warmup_steps'] > cfg['steps']:
        raise UserError(f"{name_of('warmup_steps')} ({cfg['warmup_steps']}) must be <= "
                        f"{name_of('steps')} ({cfg['steps']})")
    if cfg['data_format'] == 'text' and cfg['val_docs'] is not None:
        raise UserError(f"{name_of('val_docs')} counts documents: a text validates on all of "
                        "its held-out part")
    if cfg['mode'] == 'scalar':
        if any(cfg[name] != value for name, value in SCALAR_OWN.items()):
            raise UserError(f"{name_of('mode')} scalar trains one document a step in float64: "
                            f"{name_of('batch_size')} must be 1 and {name_of('dtype')} float64")
        for name, s in SETTINGS.items():
            if 'scalar' not in s.modes and cfg[name] != s.default:
                raise UserError(f"{name_of(name)} {cfg[name]} needs --mode tensor: "
                                f"{SCALAR_BLOCKS if s.part == 'model' else REFERENCE_OPTIMIZER}")


def scalar_values(cfg, given=(), name_of=option):
    """cfg as scalar mode runs it: with its own values (one document a step, in float64).
    A value of those that the user gave (the settings in `given`) and scalar mode cannot
    run is an error, never dropped."""
    for name, own in SCALAR_OWN.items():
        if name in given and cfg[name] != own:
            raise UserError(f"{name_of(name)} {cfg[name]} needs --mode tensor: scalar mode "
                            f"trains one document a step in float64 ({name_of(name)} {own})")
    return dict(cfg, **SCALAR_OWN)


def as_given(cfg, given, modes=()):
    """A command's settings from the options the user gave (the settings in `given`): the
    recipe's bar those given, scalar mode's own if it or any of `modes` (an ablation's
    cells') is scalar, all checked. Returns them, and set_by {setting: how an error names
    it}: the recipe's option, for what the recipe set ("--recipe nanochat's --optimizer")."""
    cfg = with_recipe(cfg, given)
    if 'scalar' in {cfg['mode'], *modes}:  # every cell with scalar mode runs as it can
        cfg = scalar_values(cfg, given)  # one document a step, Python floats
    set_by = {name: f"--recipe {cfg['recipe']}'s {option(name)}"
              for name in set(RECIPES.get(cfg['recipe'], ())) - set(given)}
    check(cfg, lambda name: set_by.get(name) or option(name))
    return cfg, set_by


# ---------------------------------------------------------------------------
# Reading a recorded config back: one reader for every record.
def read(recorded, where, extra=(), against=None):
    """The checked settings of a recorded config (a dict): every setting, those that came
    after the record taking their defaults. A UserError, begun with `where` (the file:
    'config.json:'), names the setting that is unknown (besides the names in `extra`),
    missing or not allowed; or, given against (another record of the same run, and where it
    is), a setting or field that this record says otherwise than that one."""
    unknown = sorted(set(recorded) - set(SETTINGS) - set(extra))
    if unknown:
        raise UserError(f"{where} {unknown[0]} is not a setting of a run")
    cfg = {}
    for name, s in SETTINGS.items():
        if name not in recorded and not s.later:
            raise UserError(f"{where} {name} is missing")
        cfg[name] = recorded.get(name, s.default)
    check(cfg, lambda name: f"{where} {name}")
    other, other_where = against or ({}, '')
    for name, value in other.items():
        if name in recorded and recorded[name] != value:
            raise UserError(f"{where} {name} is {json.dumps(recorded[name])}, but {other_where} "
                            f"says {json.dumps(value)}")
    return cfg


def recorded_data(path, sha256, src):
    """The data file a record names, if it still holds the same bytes; else the data set of
    that name shipped with the project (names.txt), if that one does."""
    for candidate in (path, os.path.join(data.SHIPPED, os.path.basename(path))):
        if os.path.isfile(candidate) and data.sha256_of(candidate) == sha256:
            return os.path.abspath(candidate)
    raise UserError(f"{path} is missing or has changed since the run in {src} "
                    f"(sha256 {sha256[:12]}...)")
