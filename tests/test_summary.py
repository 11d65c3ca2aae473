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
    monkeypatch.setattr(plots, 'intervals', lambda path, rows, measure, title: drawn.append(rows))
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


def test_records_from_before_bits_per_byte_keep_their_table_and_intervals_in_loss(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, 'intervals', lambda path, rows, measure, title: drawn.append((measure, rows)))
    stat, none = (1.5, 0.1), (None, None)
    delta = dict(mean=-0.1, low=-0.2, high=0.0)
    row = lambda lr, d: dict(variant='untied-norm', seeds=2, diverged=0, last_n=1, val_loss=stat, val_bpb=none,
                             final_loss=stat, mean_loss_last_n=stat, tokens_per_s=stat, samples_train=none,
                             samples_val=none, samples_new=none, val_delta=d, bpb_delta=None, lr=lr)
    cells = [(('lr', 0.01),), (('lr', 0.02),)]
    table = [row(0.01, None), row(0.02, delta)]
    summary.draw_intervals(str(tmp_path), table, cells)
    assert drawn == [('loss', [('the reference', None), ('lr=0.02', (-0.1, -0.2, 0.0))])]
    md = summary.markdown_table(table, cells, ['lr'])
    assert md.startswith('| lr | val loss | Δ val loss vs the reference (95% CI) | final loss |')
    assert '| 0.02 | 1.5000 ± 0.1000 | -0.1000 [-0.2000, +0.0000] |' in md and 'bpb' not in md
