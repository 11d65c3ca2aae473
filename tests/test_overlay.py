"""overlay.py: the plot command: runs and ablations drawn over each other, and the folders
and pictures it refuses in one line."""
import os
import shutil

import pytest

import cli
from microgpt_lab import plots, records
from conftest import DOCS, main_output, one_line_error, train_small

PNG = b'\x89PNG\r\n\x1a\n'


def record(folder, losses=(3.2, 3.0, 2.9, 2.7), status='completed'):
    """A run record as plot reads it (metrics.json, losses.csv), written directly."""
    os.makedirs(folder)
    records.write_atomic(os.path.join(folder, 'losses.csv'), records.csv_text(
        ['step', 'loss'], enumerate(losses, 1)))
    records.write_json(os.path.join(folder, 'metrics.json'), dict(
        status=status, steps=len(losses), final_loss=losses[-1], mean_loss_last_n=losses[-1],
        last_n=1, val_loss=2.8, steps_per_s=1.0, tokens_per_s=1.0, val_history=[[len(losses), 2.8]]))


@pytest.fixture(scope='module')
def ablated(tmp_path_factory):
    """A small ablation of two variants, made once (the tests copy it)."""
    folder = tmp_path_factory.mktemp('ablated')
    (folder / 'docs.txt').write_text('\n'.join(DOCS) + '\n')
    assert main_output(cli.main, 'ablate', '--data', folder / 'docs.txt', '--steps', '5',
                       '--n-embd', '8', '--n-head', '2', '--jobs', '1', '--variants',
                       'untied-norm,tied-norm', '--out', folder / 'abl')[0] == 0
    return folder / 'abl'


def test_plot_overlays_runs_and_ablations_and_refuses_other_folders(small, ablated):
    assert train_small(small / 'run') == 0  # a record as train writes it
    shutil.copytree(ablated, small / 'abl')
    code, out, err = main_output(cli.main, 'plot', 'run', 'abl', '--png', 'both.png')
    assert code == 0, err
    assert 'plot: both.png (3 curves)' in out and (small / 'both.png').read_bytes()[:8] == PNG
    (small / 'empty').mkdir()
    code, _, err = main_output(cli.main, 'plot', 'run', 'empty')
    assert code == 1 and one_line_error(err) and 'neither a run record' in err


def test_many_curves_are_drawn_as_small_multiples(small, monkeypatch):
    for seed in range(9):
        record(small / f'run{seed}', [3.0 - seed / 10, 2.5])
    drawn = []
    monkeypatch.setattr(plots, 'curves', lambda path, groups: drawn.append('curves'))
    real = plots.small_multiples
    monkeypatch.setattr(plots, 'small_multiples',
                        lambda path, groups: drawn.append(len(groups)) or real(path, groups))
    code, out, err = main_output(cli.main, 'plot', *[f'run{s}' for s in range(9)], '--png', 'm.png')
    assert code == 0, err
    assert drawn == [9] and (small / 'm.png').read_bytes()[:8] == PNG


def test_plot_refuses_an_unfinished_run_and_needs_matplotlib(small, monkeypatch):
    record(small / 'run', status='interrupted')
    code, _, err = main_output(cli.main, 'plot', 'run')
    assert code == 1 and one_line_error(err) and 'the run is interrupted' in err
    record(small / 'run2')
    monkeypatch.setattr(plots, 'pyplot', lambda: None)
    code, _, err = main_output(cli.main, 'plot', 'run2', '--png', 'x.png')
    assert code == 1 and one_line_error(err) and "pip install -e '.[plot]'" in err
    assert not (small / 'x.png').exists()


def test_dollars_and_carets_in_names_are_drawn_as_they_are(small):
    (small / 'a$x^$.txt').write_text((small / 'docs.txt').read_text())
    code, out, err = main_output(cli.main, 'train', '--data', 'a$x^$.txt', '--steps', '4',
                                 '--n-embd', '8', '--n-head', '2', '--out', 'run$x^$')
    assert code == 0 and err == '' and 'run record: run$x^$' in out, err
    assert (small / 'run$x^$' / 'losses.png').read_bytes()[:8] == PNG
    code, out, err = main_output(cli.main, 'plot', 'run$x^$', '--png', 'p.png')
    assert code == 0 and (small / 'p.png').read_bytes()[:8] == PNG, err


def test_runs_of_one_name_in_different_folders_stay_apart(small):
    for folder, steps in (('a', 4), ('b', 6)):
        record(small / folder / 'run', [3.0] * steps)
    code, out, err = main_output(cli.main, 'plot', 'a/run', 'b/run', '--png', 'p.png')
    assert code == 0 and 'plot: p.png (2 curves)' in out, err


@pytest.mark.parametrize('png, message', [
    ('run/metrics.json', 'ends in .png'), ('picture', 'ends in .png'), ('folder.png', 'is a folder'),
])
def test_the_picture_must_be_a_png_and_never_a_records_file(small, png, message):
    record(small / 'run')
    (small / 'folder.png').mkdir()
    before = (small / 'run' / 'metrics.json').read_text()
    code, _, err = main_output(cli.main, 'plot', 'run', '--png', png)
    assert code == 1 and one_line_error(err) and message in err, err
    assert (small / 'run' / 'metrics.json').read_text() == before


def test_a_completed_record_without_steps_is_refused(small):
    record(small / 'run')
    metrics = small / 'run' / 'metrics.json'
    metrics.write_text(metrics.read_text().replace('"steps": 4', '"steps": 0'))
    code, _, err = main_output(cli.main, 'plot', 'run')
    assert code == 1 and one_line_error(err) and 'a completed run has steps >= 1' in err, err


def test_more_curves_than_a_picture_shows_is_one_line(small, monkeypatch):
    for name in ('a', 'b'):
        record(small / name)
    monkeypatch.setattr(plots, 'MAX_PANELS', 1)
    code, _, err = main_output(cli.main, 'plot', 'a', 'b', '--png', 'p.png')
    assert code == 1 and one_line_error(err) and '2 curves are more than one picture shows' in err
    assert not (small / 'p.png').exists()


def test_a_running_ablation_draws_its_finished_runs(small, ablated):
    shutil.copytree(ablated, small / 'abl')
    running = small / 'abl' / 'runs' / 'tied-norm-seed42'
    for name in os.listdir(running):  # as the second run looks while it trains
        if name != 'train.log':
            os.remove(running / name)
    (running / '.running').write_text(f"{os.getpid()}\n")
    code, out, err = main_output(cli.main, 'plot', 'abl', '--png', 'p.png')
    assert code == 0 and 'plot: p.png (1 curves)' in out, err


def test_a_folder_name_that_is_not_utf8_is_drawn(small):
    record(small / 'run')
    odd = os.fsdecode(b'run\xff')
    os.rename(small / 'run', small / odd)
    code, out, err = main_output(cli.main, 'plot', odd, '--png', 'p.png')
    assert code == 0 and 'Traceback' not in err and (small / 'p.png').read_bytes()[:8] == PNG, err


def test_an_ablation_whose_runs_all_diverged_says_so(small):
    code, _, err = main_output(cli.main, 'ablate', '--data', 'docs.txt', '--steps', '30', '--lr', '1e30',
                               '--n-embd', '8', '--n-head', '2', '--variants', 'untied-norm', '--jobs', '1',
                               '--samples', '0', '--out', 'abl')
    assert code == 2 and 'runs diverged' in err, err
    code, _, err = main_output(cli.main, 'plot', 'abl')
    assert code == 1 and one_line_error(err) and "the ablation's finished runs (1) all diverged" in err, err
