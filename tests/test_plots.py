"""plots.py: a run's picture, the means over runs, intervals.png, and what happens without
matplotlib."""
import numpy as np
import pytest

from microgpt_lab import plots

PNG = b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('n, window', [(10, None), (100, None), (200, 7), (3, 5)])
def test_moving_average_is_the_mean_of_each_window_at_its_last_step(n, window):
    losses = np.random.default_rng(n).uniform(1, 4, n)
    steps, avg = plots.moving_average(losses, window)
    w = min(window or max(1, n // 50), n)  # a window longer than the run is the run
    assert list(steps) == list(range(w, n + 1))  # steps count from 1
    assert np.allclose(avg, [losses[s - w:s].mean() for s in steps])


def test_a_run_picture_is_a_png_and_saving_leaves_no_temporary_file(tmp_path):
    path = tmp_path / 'losses.png'
    assert plots.run_losses(str(path), [3.3, 3.0, 2.8, 2.9], [[2, 2.95], [4, 2.85]], 'run')
    assert path.read_bytes()[:8] == PNG and [p.name for p in tmp_path.iterdir()] == ['losses.png']


def test_a_picture_that_fails_to_save_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / 'losses.png'
    path.write_bytes(b'old picture')
    plt = plots.pyplot()
    fig = plt.figure()

    def broken(name, **kwargs):
        open(name, 'wb').write(b'half')
        raise OSError('No space left on device')
    monkeypatch.setattr(fig, 'savefig', broken)
    with pytest.raises(OSError):
        plots.save(fig, str(path))
    assert path.read_bytes() == b'old picture' and [p.name for p in tmp_path.iterdir()] == ['losses.png']


def test_without_matplotlib_nothing_is_drawn(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, 'pyplot', lambda: None)
    runs = {'a': [([3.0, 2.0], [[2, 2.5]])]}
    assert not plots.run_losses(str(tmp_path / 'a.png'), [3.0, 2.0], [], 'run')
    assert not plots.curves(str(tmp_path / 'b.png'), runs)
    assert not plots.small_multiples(str(tmp_path / 'c.png'), runs)
    assert not list(tmp_path.iterdir())


def test_a_picture_that_cannot_be_saved_names_the_path_asked_for(tmp_path):
    plt = plots.pyplot()
    with pytest.raises(OSError) as e:
        plots.save(plt.figure(), str(tmp_path / 'missing' / 'p.png'))
    assert e.value.filename == str(tmp_path / 'missing' / 'p.png')


def test_means_over_runs_take_the_common_steps_and_each_validation_step():
    runs = [([4.0, 3.0, 2.0], [[2, 3.0, 0.1], [3, 2.0]]), ([2.0, 1.0], [[2, 1.0]])]
    steps, avg = plots.mean_curve(runs)
    assert list(steps) == [1, 2] and np.allclose(avg, [3.0, 2.0])  # the 2 steps both made
    assert plots.mean_validation(runs) == ([2, 3], [2.0, 2.0])


def test_a_cell_without_an_interval_is_drawn_without_one_and_says_why(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, 'save', lambda fig, path: drawn.append(fig))
    rows = [('the reference', None), ('lr=0.02', 'n/a (needs ≥ 2 paired seeds)'), ('lr=0.03', (-0.1, -0.2, 0.0))]
    assert plots.intervals(str(tmp_path / 'i.png'), rows, 'bits per byte', 'one seed')
    (ax,) = drawn[0].axes
    marks = [y for line in ax.lines for y in line.get_ydata() if line.get_marker() == 'o']
    assert 1 not in marks and 2 in marks  # the reference (top row) has its dot; the n/a row none
    assert [t.get_text().strip() for t in ax.texts] == ['n/a (needs ≥ 2 paired seeds)']
    assert len(ax.containers) == 1  # one interval: lr=0.03's
