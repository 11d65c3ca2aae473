"""
overlay.py: the `plot` command: the loss curves of run records and ablations over each
other, in one picture (drawn by plots.py): a run's own curves, and each cell of an ablation
as the mean over its seeds.
"""
import os

from microgpt_lab import UserError, plots, records, summary
from microgpt_lab.grid import cells, read_plan, run_folder


def plot_command(cfg):
    """`cli.py plot`: the curves of the run records and ablations in cfg['dirs'] over each
    other, in one PNG, cfg['png']."""
    plots.check_png(cfg['png'])
    names = [plots.shown(os.path.basename(os.path.normpath(folder))) for folder in cfg['dirs']]
    if len(set(names)) < len(names):  # e.g. a/run and b/run: the paths tell them apart
        names = [plots.shown(os.path.normpath(folder)) for folder in cfg['dirs']]
    groups = {}
    for folder, name in zip(cfg['dirs'], names):
        if os.path.exists(os.path.join(folder, 'metrics.json')):
            m = records.read_run(folder)
            if m['status'] != 'completed':
                raise UserError(f"{folder}: the run is {m['status']}, not completed")
            groups[name] = [(m['losses'], m['val_history'])]
        elif os.path.exists(os.path.join(folder, 'ablation.json')):
            groups.update({f"{name}: {plots.shown(cell)}": runs
                           for cell, runs in ablation_curves(folder).items()})
        else:
            raise UserError(f"{folder} is neither a run record (metrics.json) nor an ablation "
                            "(ablation.json)")
    if plots.pyplot() is None:
        raise UserError(f"plot needs matplotlib: {plots.GET_MATPLOTLIB}")
    if len(groups) > plots.MAX_PANELS:
        raise UserError(f"{len(groups)} curves are more than one picture shows ({plots.MAX_PANELS}): "
                        "give fewer folders")
    (plots.curves if len(groups) <= 8 else plots.small_multiples)(cfg['png'], groups)
    print(f"plot: {cfg['png']} ({len(groups)} curves)")


def ablation_curves(folder):
    """The curves of the ablation in folder, by cell (summary.curves): of its completed runs,
    the others still running or not begun. A UserError if none has completed, saying why."""
    runs = finished_runs(folder)
    groups = summary.curves(runs)
    if not groups:
        diverged = sum(records.read_run(run_dir)['status'] == 'diverged' for _, run_dir in runs)
        if runs and diverged == len(runs):
            raise UserError(f"{folder}: the ablation's finished runs ({diverged}) all diverged: "
                            "no curve to draw")
        raise UserError(f"{folder}: the ablation has no {'completed' if runs else 'finished'} run "
                        f"yet{f' ({diverged} diverged)' if diverged else ''}")
    return groups


def finished_runs(out):
    """[(cell, run folder)] of the runs of the ablation in out that have their record, by
    its plan (the data need not be there: nothing is trained)."""
    cfg, seeds, axes = read_plan(out, with_data=False)
    return [(cell, run_folder(out, cell, seed)) for seed in seeds for cell in cells(axes, cfg['design'])
            if os.path.exists(os.path.join(run_folder(out, cell, seed), 'metrics.json'))]
