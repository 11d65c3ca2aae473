"""summary.py: the table and the pictures of an ablation agree, cell by cell, and a grid too
big for one picture keeps its summary."""
from microgpt_lab import plots, summary


def test_a_grid_too_big_for_one_picture_keeps_its_summary_and_skips_the_picture(tmp_path, capsys):
    cells = [(('lr', 0.001 * i),) for i in range(1, plots.MAX_PANELS + 2)]
    summary.plot(str(tmp_path), [], cells)
    assert f'plot skipped: {plots.MAX_PANELS + 1} cells are more than' in capsys.readouterr().out
    assert not (tmp_path / 'losses.png').exists()


def test_a_cell_without_an_interval_says_so_in_the_table_and_the_picture_alike(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, 'intervals', lambda path, rows, title: drawn.append(rows))
    stat = (1.5, None)  # one seed: no spread, and no interval
    row = lambda delta: dict(variant='untied-norm', seeds=1, diverged=0, last_n=1, val_loss=stat, val_bpb=stat, final_loss=stat,
                             mean_loss_last_n=stat, tokens_per_s=stat, samples_train=(None, None),
                             samples_val=(None, None), samples_new=(None, None), val_delta=delta, bpb_delta=delta, lr=0.01)
    cells = [(('lr', 0.01),), (('lr', 0.02),)]
    table = [row(None), dict(row(None), lr=0.02)]
    summary.draw_intervals(str(tmp_path), table, cells)
    (rows,) = drawn
    assert rows == [('the reference', None), ('lr=0.02', summary.NO_INTERVAL)]
    assert f"| 0.02 | 1.5000 | {summary.NO_INTERVAL} |" in summary.markdown_table(table, cells, ['lr'])
