"""
grid.py: an ablation's grid: its axes, its cells, the one name of a cell, and the plan that
records them (ablation.json).

A grid crosses axes: each a setting (or settings varied together, a recipe) with its values.
Its first, by default, is the variants: lm_head untied or tied to wte, crossed with the
rmsnorm of the input embedding on or off; the first variant, untied with the rmsnorm, is the
reference's model. The cells of a grid are every combination of the axes' values (--design
product), each value alone against the reference cell (alone), or one change at a time
(path). Read top to bottom: the axes, the cells, their names, a cell's settings and the
checks of a grid, the plan.
"""
import hashlib
import itertools
import os
import re

import data
from microgpt_lab import UserError, records, settings, tokens

# ---------------------------------------------------------------------------
# The grid: its axes, each a setting (or settings varied together) with its values; its
# cells, each a value of every axis; the first cell, the first value of each axis, is the
# reference. The default axis is the variants, whose values go by their names.
VARIANT_AXIS = 'tie_lm_head+input_rmsnorm'
VARIANT_NAMES = {(False, True): 'untied-norm', (True, True): 'tied-norm',  # the first: the reference's
                 (False, False): 'untied-nonorm', (True, False): 'tied-nonorm'}
NOT_VARIED = {name: s.fixed for name, s in settings.SETTINGS.items() if s.fixed}  # and why
NOT_VARIED['out'] = 'one ablation, one folder'
DESIGNS = settings.COMMAND_OPTIONS['design'].kind  # ('product', 'alone', 'path')


def axes_of(variants, vary, name_of=settings.option):
    """A grid's axes: the variants named (all four if None) then each --vary axis; or the
    --vary axes alone, when they vary lm_head or the input rmsnorm themselves."""
    own = {n for name, _ in vary for n in name.split('+')} & {*VARIANT_AXIS.split('+'), 'recipe'}
    if own and variants is None:
        return list(vary)
    by_name = {name: value for value, name in VARIANT_NAMES.items()}
    names = list(by_name) if variants is None else variants
    unknown = [v for v in names if v not in by_name]
    if unknown:
        raise UserError(f"{name_of('variants')}: {unknown[0]} is not a variant ({', '.join(by_name)})")
    if not names or len(set(names)) != len(names):
        raise UserError(f"{name_of('variants')}: give each variant at most once, at least one")
    return [(VARIANT_AXIS, [by_name[v] for v in names])] + list(vary)


def axis(spec):
    """The axis of a --vary NAME=V1,V2,...: (setting, [values]), the setting named as its
    train option (less the --; the flags' settings as tie-lm-head, input-rmsnorm), its values
    converted and checked by the settings table. Of NAME+NAME=V+V,V+V,... (settings varied
    together): ('name+name', [(value, value), ...])."""
    names, _, values = spec.partition('=')
    if '+' in names:  # settings varied together: each value a V+V, one part a setting
        rows = [v.split('+') for v in values.split(',')] if values else []
        if not rows or any(len(r) != names.count('+') + 1 for r in rows):
            raise UserError(f"--vary {spec}: give NAME+NAME=V+V,... with a value for each NAME")
        columns = [axis(f"{name}={','.join(r[i] for r in rows)}")
                   for i, name in enumerate(names.split('+'))]
        return '+'.join(c[0] for c in columns), list(zip(*(c[1] for c in columns)))
    opt = '--' + names.lstrip('-')
    setting = opt[2:].replace('-', '_')
    if setting not in settings.SETTINGS or not settings.option(setting):
        raise UserError(f"--vary {spec}: {opt[2:]} is not a setting of train")
    if not values:
        raise UserError(f"--vary {spec}: give NAME=V1,V2,...")
    return setting, [settings.convert(setting, v, f"--vary {opt}") for v in values.split(',')]


def modes(axes):
    """The modes that a grid's axes set (none: the base setting's)."""
    return {v for name, values in axes for value in values for n, v in pairs(name, value)
            if n == 'mode'}


def cells(axes, design='product'):
    """The grid's cells, each ((axis, value), ...) with a value of every axis, the reference
    cell first. design 'product': every combination of the axes' values, the first axis's
    side by side (the variants, by default), the others nested in their order. 'alone':
    the reference cell, then one cell for each other value of each axis, the rest as the
    reference: each choice alone against the reference, which all of them share. 'path':
    the reference cell, then one change at a time, each cell keeping the changes before it:
    the axes in their order, each through its values (a staircase from the first cell to the
    last). A cell that makes the same run as an earlier one, because its own values leave one
    of its settings idle, is left out: tokenizer=char beside vocab-size=512 and beside 1024
    are one cell, when both are varied."""
    first = tuple((name, values[0]) for name, values in axes)
    if design == 'alone':
        grid = [first] + [first[:i] + ((name, value),) + first[i + 1:]
                          for i, (name, values) in enumerate(axes) for value in values[1:]]
    elif design == 'path':
        grid = [first]
        for i, (name, values) in enumerate(axes):
            grid += [grid[-1][:i] + ((name, value),) + grid[-1][i + 1:] for value in values[1:]]
    else:
        inner, *outer = [[(name, value) for value in values] for name, values in axes]
        grid = [(combo[-1], *combo[:-1]) for combo in itertools.product(*outer, inner)]
    runs = {}  # a cell as it runs: its settings that its own values leave idle at their axis's first
    for cell in grid:
        runs.setdefault(as_run(cell, dict(axes)), cell)
    return list(runs.values())


def as_run(cell, axes):
    """A cell with each (single) axis's setting that the cell's own values leave idle
    (settings.idle: vocab-size beside tokenizer=char) at its axis's first value."""
    values = {n: v for name, value in cell for n, v in pairs(name, value)}
    idle = lambda s: s and s.needs and s.needs[0] in values and values[s.needs[0]] != s.needs[1]
    return tuple((name, axes[name][0] if idle(settings.SETTINGS.get(name)) else value) for name, value in cell)


def pairs(name, value):
    """The (setting, value) pairs of one axis's value: an axis of settings varied together
    ('norm+activation', a recipe) has a value for each."""
    return list(zip(name.split('+'), value)) if '+' in name else [(name, value)]


def said(name, value):
    """A setting's value in words, as one would type it: a switch's on or off, the
    setting's own word for None (auto, none, all), 15 for 15.0."""
    if settings.SETTINGS[name].kind is bool:
        return 'on' if value else 'off'
    if value is None:
        return settings.SETTINGS[name].none or 'auto'
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith('.0') else text
    return str(value)


MAX_NAME = 120  # characters of a run's folder name before its seed


def cell_name(cell, form='words', against=None):
    """A cell's name: a part for each axis, a variant's name or NAME=VALUE. The forms:
    'words', as the table, the pictures and the progress lines say it: each value as one
    would type it (said), settings varied together each apart ('untied-norm, optimizer=muon,
    muon-lr=0.01'); against another cell, only what it changes from that one, or '(the
    reference)'. 'folder', its runs' folder (before '-seed42'), and 'label', summary.json's:
    each value as Python prints it, a switch's on or off, settings varied together joined by
    + ('untied-norm-optimizer+muon-lr=muon+0.01', 'untied-norm optimizer+muon-lr=muon+0.01').
    Every ablation has named its folders so: --resume finds its runs by them."""
    def part(axis, value, words):
        if axis == VARIANT_AXIS:
            return VARIANT_NAMES[tuple(value)]
        if words:
            return ', '.join(f"{n.replace('_', '-')}={said(n, v)}" for n, v in pairs(axis, value))
        kept = [said(n, v) if settings.SETTINGS[n].kind is bool else str(v) for n, v in pairs(axis, value)]
        return f"{axis.replace('_', '-')}={'+'.join(kept)}"
    folders = [part(axis, value, False) for axis, value in cell]
    if form == 'words':  # against a cell: the parts whose folder's part differs from its
        theirs = folders if against is None else [part(axis, value, False) for axis, value in against]
        return ', '.join(part(axis, value, True) for (axis, value), mine, other in zip(cell, folders, theirs)
                         if against is None or mine != other) or '(the reference)'
    if form == 'label':
        return ' '.join(folders)
    folder = '-'.join(re.sub(r'[^A-Za-z0-9.+=-]', '_', part) for part in folders)
    if len(folder) > MAX_NAME:  # a file name holds 255 bytes: keep a readable start, made unique
        folder = f"{folder[:MAX_NAME - 13]}-{hashlib.sha256(folder.encode()).hexdigest()[:12]}"
    return folder


def run_folder(out, cell, seed):
    """The folder of a cell's run with a seed, in the ablation in out."""
    return os.path.join(out, 'runs', f"{cell_name(cell, 'folder')}-seed{seed}")


def names(grid, design='product'):
    """Each cell's name in words, as the table and the pictures show it: what it changes
    from the reference ('activation=relu2, norm=layernorm'); on a path, what it adds to the
    cell before it ('+ norm=layernorm')."""
    if design == 'path':
        return ['the reference'] + [f"+ {cell_name(cell, against=before)}" for before, cell in zip(grid, grid[1:])]
    return ['the reference'] + [cell_name(cell, against=grid[0]) for cell in grid[1:]]


# ---------------------------------------------------------------------------
# A cell's settings, and the checks of a grid before anything runs
def cell_config(base, cell, seed):
    """A cell's run with a seed: the base settings, with the cell's values; the cell's recipe
    (varied, or the command's) sets its settings, bar those its axes vary or the command gave
    (and those that need a setting given otherwise step back: rope-base without rope)."""
    varied = {n: v for name, value in cell for n, v in pairs(name, value)}
    cfg = dict({name: base[name] for name in settings.SETTINGS}, **varied, seed=seed)
    return settings.with_recipe(cfg, {*varied, *base.get('given', ())}) if cfg['recipe'] else cfg


def check_grid(base, axes, name_of, design='product'):
    """A UserError for the first thing in a grid that cannot run: a setting that is not
    varied, or a cell whose settings do not fit together."""
    for joint, values in axes:
        names = joint.split('+')  # settings varied together: a value for each, joined by +
        if len(names) > 1 and any(not isinstance(v, (list, tuple)) or len(v) != len(names)
                                  for v in values):
            raise UserError(f"{name_of('vary')} {joint.replace('_', '-')}: give a value for "
                            "each setting, joined by +")
        if not values or len(set(map(str, values))) != len(values):
            raise UserError(f"{name_of('vary')} {joint.replace('_', '-')}: give distinct values")
        for i, name in enumerate(names):
            column = [pairs(joint, v)[i][1] for v in values]
            if name == 'threads' and None in column:
                raise UserError(f"{name_of('vary')} threads=auto: an ablation's runs each run a "
                                "given number of threads, so that --jobs changes nothing")
            if name in NOT_VARIED or name not in settings.SETTINGS:
                why = NOT_VARIED.get(name, 'it is not a setting of a run')
                raise UserError(f"{name_of('vary')} {name.replace('_', '-')}: not varied: {why}")
            for value in column:
                why = settings.problem(settings.SETTINGS[name], value)
                if why:
                    raise UserError(f"{name_of('vary')} {name.replace('_', '-')}={value}: {why}")
    varied = [n for joint, _ in axes for n in joint.split('+')]
    if len(set(varied)) != len(varied):
        raise UserError(f"{name_of('vary')}: each setting once")
    if design not in DESIGNS:
        raise UserError(f"{name_of('design')} must be {' or '.join(DESIGNS)}, got {design!r}")
    runs, acting = {}, set()  # a cell's run as it trains, autos resolved and the settings
    for cell in cells(axes, design):  # that change nothing left out: one a cell, never twice
        cfg = cell_config(base, cell, base['seed'])
        settings.check(cfg, name_of)
        idle = settings.idle(cfg)
        acting |= set(settings.SETTINGS) - set(idle)
        run = repr(sorted(dict({k: v for k, v in cfg.items() if k not in idle}, recipe=None,
                               n_kv_head=cfg['n_kv_head'] or cfg['n_head'],
                               val_docs=tokens.val_docs_of(cfg)).items()))
        if run in runs:
            raise UserError(f"{name_of('vary')}: {cell_name(runs[run], against=cell)} and "
                            f"{cell_name(cell, against=runs[run])} make one run (auto, a recipe, or a "
                            "setting that changes nothing there, sets the same): give values that differ")
        runs[run] = cell
    for name in set(settings.SETTINGS) - acting - set(varied):  # set, but idle in every cell
        if base[name] != settings.SETTINGS[name].default:
            raise UserError(f"{settings.needs(name, name_of)}, which no cell has: it changes nothing")
    muon = [cell_config(base, cell, 0) for cell in cells(axes, design)]
    muon = [{k: v for k, v in cfg.items() if k != 'lr'} for cfg in muon if cfg['optimizer'] == 'muon']
    if len(muon) != len({repr(sorted(cfg.items())) for cfg in muon}):  # cells only --lr tells apart
        raise UserError(f"{name_of('vary')} lr: with --optimizer muon, --lr is only the schedule's peak: "
                        "vary muon-lr (and the optimizer's groups follow the schedule)")
    scored = {tokens.val_docs_of(cell_config(base, cell, base['seed'])) for cell in cells(axes, design)}
    if len(scored) > 1 and base['data_format'] == 'lines':
        raise UserError(f"{name_of('vary')} mode: its cells would be scored on different "
                        "validation sets (tensor mode: every held-out document; scalar mode: "
                        f"200 of them), which cannot be compared: give {name_of('val_docs')} N")



# ---------------------------------------------------------------------------
# The plan: the grid as ablation.json records it, which --resume reads back.
PLAN_FIELDS = ('seeds', 'jobs', 'out', 'design', 'given')  # in the plan's config beside the settings


def write_plan(out, cfg, axes, seeds):
    """ablation.json in out: the command's settings, the seeds, the data's sha256, and the
    axes as --variants and --vary gave them."""
    config = {k: v for k, v in cfg.items() if k not in ('variants', 'vary')}
    variants = [VARIANT_NAMES[v] for v in axes[0][1]] \
        if len(axes) > len(cfg['vary']) else None  # the axis --vary did not give
    records.write_json(os.path.join(out, 'ablation.json'), dict(
        config=dict(config, data=os.path.abspath(cfg['data'])), seeds=seeds,
        data_sha256=data.sha256_of(cfg['data']), variants=variants, vary=cfg['vary']))


def read_plan(out, with_data=True):
    """The plan of the ablation in out (ablation.json), checked: (settings, seeds, axes). A
    plan from before grids has all four variants and no other axes. with_data: its data
    must be there still, with the same bytes (to train)."""
    path = os.path.join(out, 'ablation.json')
    plan = records.read_json(path, 'an ablation')
    recorded = records.field(plan, 'config', path, dict)
    seeds = records.field(plan, 'seeds', path, list, lambda s: s and all(
        type(x) is int and x >= 0 for x in s) and len(set(s)) == len(s), 'a list of seeds')
    cfg = dict(settings.read(recorded, f"{path}: config", PLAN_FIELDS),
               jobs=records.field(recorded, 'jobs', path, (int, type(None)), lambda j: not
                                  settings.problem(settings.COMMAND_OPTIONS['jobs'], j),
                                  'a count up to 1024'),
               design=recorded.get('design', 'product'),  # plans before designs: the product
               given=records.field(dict(dict(given=[]), **recorded), 'given', path, list, lambda g: all(
                   isinstance(n, str) and n in settings.SETTINGS for n in g), 'a list of settings'))
    variants = records.field(dict(dict(variants=None), **plan), 'variants', path,
                             (list, dict, type(None)))  # None: its --vary varies them
    vary = records.field(dict(dict(vary=[]), **plan), 'vary', path, list, lambda a: all(
        isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], list)
        for x in a), 'a list of [setting, values]')
    vary = [(name, [tuple(v) if '+' in name and isinstance(v, list) else v for v in values])
            for name, values in vary]  # values of settings varied together: tuples
    name_of = lambda name: f"{path}: {name}"
    axes = axes_of(None if variants is None else list(variants), vary, name_of)
    check_grid(cfg, axes, name_of, cfg['design'])
    sha = records.field(plan, 'data_sha256', path, str)
    if with_data:
        cfg['data'] = settings.recorded_data(cfg['data'], sha, out)
    return cfg, seeds, axes

