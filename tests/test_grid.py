"""grid.py: a grid's cells by design, a cell's one name (in words, and its runs' folders as
every earlier ablation named them), a cell's settings, and the grids refused before anything
runs."""
import json
import os

import pytest

from microgpt_lab import UserError, grid, settings, summary
from conftest import ROOT

COMMITTED = sorted((ROOT / 'results').glob('*/ablation.json'))  # every ablation the README cites

def test_the_alone_design_is_the_reference_and_one_change_a_cell():
    variants = (grid.VARIANT_AXIS, [(False, True), (True, True)])
    axes = [variants, ('lr', [0.01, 0.02, 0.03]),
            ('norm+final_norm', [('rmsnorm', False), ('layernorm', True)])]
    ref = ((grid.VARIANT_AXIS, (False, True)), ('lr', 0.01), ('norm+final_norm', ('rmsnorm', False)))
    assert grid.cells(axes, 'alone') == [
        ref, ((grid.VARIANT_AXIS, (True, True)), *ref[1:]),
        (ref[0], ('lr', 0.02), ref[2]), (ref[0], ('lr', 0.03), ref[2]),
        (*ref[:2], ('norm+final_norm', ('layernorm', True)))]
    product = grid.cells(axes)
    assert len(product) == 2 * 3 * 2 and product[0] == ref
    assert [grid.cell_name(c, 'label') for c in product[:3]] == [  # the variants side by side
        'untied-norm lr=0.01 norm+final-norm=rmsnorm+off', 'tied-norm lr=0.01 norm+final-norm=rmsnorm+off',
        'untied-norm lr=0.01 norm+final-norm=layernorm+on']


def test_cells_are_named_in_words_while_their_folders_keep_their_names():
    reference = (('softcap', 0.0), ('n_kv_head', None), ('optimizer+muon_lr', ('adamw', 0.02)))
    cell = (('softcap', 15.0), ('n_kv_head', None), ('optimizer+muon_lr', ('muon', 0.01)))
    assert grid.cell_name(cell, against=reference) == 'softcap=15, optimizer=muon, muon-lr=0.01'
    assert grid.cell_name(reference) == 'softcap=0, n-kv-head=auto, optimizer=adamw, muon-lr=0.02'
    assert grid.said('norm_eps', 1e-05) == '1e-05' and grid.said('qk_norm', True) == 'on'
    assert grid.said('lr', 1e15) == '1000000000000000' and grid.said('lr', 1e20) == '1e+20'
    # the run folders, which resume finds by name, are as every earlier ablation wrote them
    assert grid.cell_name(cell, 'folder') + '-seed42' == 'softcap=15.0-n-kv-head=None-optimizer+muon-lr=muon+0.01-seed42'
    # a product table gives each setting varied together its own column, its values in words
    row = lambda values, delta: dict(values, variant='untied-norm', seeds=2, diverged=0, last_n=100,
                                     val_loss=(1.5, 0.1), val_bpb=(2.1, 0.1), final_loss=(1.4, 0.1), mean_loss_last_n=(1.45, 0.1),
                                     tokens_per_s=(1000.0, 10.0), samples_train=(None, None),
                                     samples_val=(None, None), samples_new=(None, None), val_delta=delta, bpb_delta=delta)
    cells = [(('softcap', 0.0), ('optimizer+muon_lr', ('adamw', 0.02))),
             (('softcap', 15.0), ('optimizer+muon_lr', ('muon', 0.01)))]
    table = [row({'softcap': 0.0, 'optimizer+muon_lr': ('adamw', 0.02)}, None),
             row({'softcap': 15.0, 'optimizer+muon_lr': ('muon', 0.01)}, dict(mean=-0.1, low=-0.2, high=0.0))]
    lines = summary.markdown_table(table, cells, ['softcap', 'optimizer+muon_lr']).splitlines()
    assert lines[0].startswith('| softcap | optimizer | muon-lr | val bpb | Δ val bpb vs the reference (95% CI) | val loss |')
    assert lines[1].count('---') == 3 + 7 and lines[0].count('|') == lines[1].count('|')
    assert lines[3].startswith('| 15 | muon | 0.01 | 2.1000 ± 0.1000 | -0.1000 [-0.2000, +0.0000] | 1.5000 ± 0.1000 |')


def test_the_path_design_adds_one_change_a_cell_keeping_those_before():
    axes = [('lr', [1, 2, 3]), ('steps', [4, 5])]
    assert grid.cells(axes, 'path') == [(('lr', 1), ('steps', 4)), (('lr', 2), ('steps', 4)),
                                            (('lr', 3), ('steps', 4)), (('lr', 3), ('steps', 5))]
    assert grid.names(grid.cells(axes, 'path'), 'path') == ['the reference', '+ lr=2', '+ lr=3', '+ steps=5']


def test_a_varied_recipe_sets_its_settings_bar_those_given_or_varied():
    base = dict({name: s.default for name, s in settings.SETTINGS.items()}, given=['activation'])
    cfg = grid.cell_config(base, (('recipe', 'nanochat'), ('softcap', 0.0)), 7)
    assert (cfg['seed'], cfg['recipe'], cfg['softcap'], cfg['activation']) == (7, 'nanochat', 0.0, 'relu')
    assert all(cfg[k] == v for k, v in settings.RECIPES['nanochat'].items() if k not in ('softcap', 'activation'))
    assert grid.axes_of(None, [('recipe', ['microgpt', 'gpt2'])]) == [('recipe', ['microgpt', 'gpt2'])]


@pytest.mark.parametrize('plan', COMMITTED, ids=lambda plan: plan.parent.name)
def test_a_committed_ablation_finds_its_runs_and_names_its_cells_as_it_did(plan):
    """--resume finds a run by its folder's name: every ablation under results/ keeps its
    names, and its summary's and table's names of its cells."""
    cfg, seeds, axes = grid.read_plan(str(plan.parent), with_data=False)
    cells = grid.cells(axes, cfg['design'])
    assert {f"{grid.cell_name(cell, 'folder')}-seed{seed}" for cell in cells for seed in seeds} == \
        set(os.listdir(plan.parent / 'runs'))
    recorded = json.loads((plan.parent / 'summary.json').read_text())['variants']
    if 'cell' in recorded[0]:  # (summaries before grids named their variants alone)
        assert [c['cell'] for c in recorded] == [grid.cell_name(cell, 'label') for cell in cells]
    table = (plan.parent / 'table.md').read_text()
    if cfg['design'] != 'product':  # its rows are named in words
        assert all(f"| {name} |" in table for name in grid.names(cells, cfg['design'])[1:])


def test_two_cells_of_one_run_are_refused_before_anything_trains():
    base = dict({name: s.default for name, s in settings.SETTINGS.items()}, n_head=2, n_embd=8, mode='tensor')
    axes = [('n_kv_head', [2, None])]  # auto is --n-head's 2
    with pytest.raises(UserError, match='n-kv-head=2 and n-kv-head=auto make one run'):
        grid.check_grid(base, axes, settings.option)
    grid.check_grid(dict(base, n_head=4), axes, settings.option)  # auto is 4: two runs
    recipes = [('recipe', [None, 'microgpt'])]  # the microgpt recipe sets the defaults
    with pytest.raises(UserError, match='recipe=none and recipe=microgpt make one run'):
        grid.check_grid(base, recipes, settings.option)


def test_a_base_recipe_sets_each_cell_and_its_dependents_step_back_where_a_cell_varies_their_parent():
    """ablate --recipe nanochat --vary position=learned,rope: the learned cell runs with
    rope's base back at its default (it would change nothing), as train does beside a recipe."""
    base = settings.with_recipe(dict({name: s.default for name, s in settings.SETTINGS.items()},
                                     recipe='nanochat', mode='tensor'))
    learned, rope = (grid.cell_config(base, (('position', p),), 42) for p in ('learned', 'rope'))
    assert (learned['position'], learned['rope_base'], rope['rope_base']) == ('learned', 10000.0, 100000.0)
    assert learned['softcap'] == rope['softcap'] == 15.0  # the rest of the recipe in both
    grid.check_grid(base, [('position', ['learned', 'rope'])], settings.option)
    assert grid.said('recipe', None) == 'none' and grid.said('top_k', None) == 'all'
    assert grid.said('n_kv_head', None) == 'auto'


def test_cells_that_make_one_run_as_a_setting_is_idle_in_them_are_one_cell():
    """vocab-size acts beside tokenizer=bpe only: characters at 512 and at 1024 are one run."""
    axes = [('tokenizer', ['char', 'bpe']), ('vocab_size', [512, 1024])]
    assert grid.cells(axes) == [(('tokenizer', 'char'), ('vocab_size', 512)), (('tokenizer', 'bpe'), ('vocab_size', 512)),
                                (('tokenizer', 'bpe'), ('vocab_size', 1024))]
    axes = [('vocab_size', [280, 300]), ('tokenizer', ['bpe', 'char'])]  # a path ends at characters
    assert grid.cells(axes, 'path')[-1] == (('vocab_size', 300), ('tokenizer', 'char'))
    assert len(grid.cells(axes, 'path')) == 3 and len(grid.cells(axes, 'alone')) == 3
