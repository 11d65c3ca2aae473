"""records.py: files written whole, folders owned by one command, and every file read back
checked, with a one-line error naming the file and the field."""
import errno
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from microgpt_lab import UserError, records, provenance


def test_write_atomic_leaves_no_temporary_file_and_replaces_whole(tmp_path):
    path = tmp_path / 'a.txt'
    records.write_atomic(str(path), 'one')
    records.write_atomic(str(path), 'two')
    assert path.read_text() == 'two' and os.listdir(tmp_path) == ['a.txt']


def test_json_text_writes_nan_and_infinity_as_null():
    assert json.loads(records.json_text({'a': float('nan'), 'b': [1.5, float('inf')]})) == \
        {'a': None, 'b': [1.5, None]}


def test_write_record_moves_the_whole_record_when_its_folder_fails(tmp_path, monkeypatch):
    write = records.write_atomic

    def full_disk(path, text):
        if path.startswith(str(tmp_path)) and path.endswith('b.txt'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, text)
    monkeypatch.setattr(records, 'write_atomic', full_disk)
    with pytest.raises(UserError, match='No space left on device.*saved to .* instead') as e:
        records.write_record(str(tmp_path), {'a.txt': 'A', 'b.txt': 'B', 'metrics.json': '{}'})
    assert os.listdir(tmp_path) == []  # nothing half-written stays
    rescue = str(e.value).split('saved to ')[1].split(' instead')[0]
    assert sorted(os.listdir(rescue)) == ['a.txt', 'b.txt', 'metrics.json']
    shutil.rmtree(rescue)


# ---------------------------------------------------------------------------
# Folders
def test_a_claimed_folder_cannot_be_claimed_again_until_released(tmp_path):
    records.claim(str(tmp_path))
    with pytest.raises(UserError, match='in use by another command'):
        records.claim(str(tmp_path), must_be_empty=False)
    records.release(str(tmp_path))
    records.claim(str(tmp_path))


def test_a_folder_with_files_cannot_be_claimed_for_a_new_record(tmp_path):
    (tmp_path / 'x').write_text('')
    with pytest.raises(UserError, match='is not empty'):
        records.claim(str(tmp_path))
    assert os.listdir(tmp_path) == ['x']  # the failed claim left nothing behind


def test_owned_removes_only_a_folder_it_made_and_left_empty(tmp_path):
    mine, theirs = tmp_path / 'mine', tmp_path / 'theirs'
    theirs.mkdir()
    for folder in (mine, theirs):
        path, made = records.new_folder(str(folder), 'runs', 'x', provenance.now())
        with pytest.raises(RuntimeError):
            with records.owned(path, made=made):
                raise RuntimeError('the work failed before writing anything')
    assert not mine.exists() and theirs.exists()


def test_default_folders_of_commands_started_together_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(records, 'results_root', lambda: str(tmp_path))
    start = provenance.now()
    paths = [records.new_folder(None, 'runs', 'x', start)[0] for _ in range(3)]
    assert len(set(paths)) == 3 and all(os.path.isdir(p) for p in paths)


# ---------------------------------------------------------------------------
# Reading back
def test_read_json_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(UserError, match='not found'):
        records.read_json(str(tmp_path / 'nope.json'), 'a run record')
    (tmp_path / 'bad.json').write_text('{"a": ')
    with pytest.raises(UserError, match='bad.json is not readable JSON'):
        records.read_json(str(tmp_path / 'bad.json'), '')
    (tmp_path / 'list.json').write_text('[]')
    with pytest.raises(UserError, match='should hold a JSON object'):
        records.read_json(str(tmp_path / 'list.json'), '')
    with pytest.raises(UserError, match='is a directory'):
        records.read_json(str(tmp_path), '')


def test_field_checks_presence_type_and_value():
    obj = {'n': 3, 'flag': True, 'x': 'a'}
    assert records.field(obj, 'n', 'f.json', int) == 3
    with pytest.raises(UserError, match='f.json: m is missing'):
        records.field(obj, 'm', 'f.json', int)
    with pytest.raises(UserError, match='f.json: flag = true is not int'):
        records.field(obj, 'flag', 'f.json', int)  # a bool is not a number
    with pytest.raises(UserError, match='is not a count'):
        records.field(obj, 'n', 'f.json', int, lambda n: n > 5, 'a count')


@pytest.mark.parametrize('text, message', [
    ('step,loss\n1,2.5\n2,2.4\n', None),
    ('', "first line should be 'step,loss'"),
    ('loss\n1\n', "first line should be 'step,loss'"),
    ('step,loss\n1,2.5\n3,2.4\n', 'expected step 2'),
    ('step,loss\n1,2.5\n2,nan\n', 'expected step 2 and a finite loss'),
    ('step,loss\n1,2.5\n', 'has 1 steps, the checkpoint 2'),
    ('step,loss\n1,2.5\n2\n', 'not a step and a loss'),
    ('step,loss\n1,2.5\n2,2.4,7\n', 'not a step and a loss'),
    ('step,loss\n1,2.5\n2,-2.4\n', 'a finite loss >= 0'),
])
def test_read_losses_checks_every_row_it_needs(tmp_path, text, message):
    path = tmp_path / 'losses.csv'
    path.write_text(text)
    if message is None:
        assert records.read_losses(str(path), 2) == [2.5, 2.4]
    else:
        with pytest.raises(UserError, match=message):
            records.read_losses(str(path), 2)


def test_a_fifo_is_refused_before_it_is_read(tmp_path):
    import os
    for name in ('losses.csv', 'metrics.json'):
        os.mkfifo(tmp_path / name)  # opening it would wait for a writer for ever
    with pytest.raises(UserError, match='losses.csv is not a regular file'):
        records.read_losses(str(tmp_path / 'losses.csv'), 2)
    with pytest.raises(UserError, match='metrics.json is not a regular file'):
        records.read_json(str(tmp_path / 'metrics.json'), 'a run record')


def test_json_nested_too_deep_to_read_is_one_error(tmp_path):
    path = tmp_path / 'config.json'
    path.write_text('[' * 100000 + ']' * 100000)
    with pytest.raises(UserError, match='config.json is not readable JSON'):
        records.read_json(str(path), 'a run record')


def test_a_claim_left_by_a_process_that_is_gone_is_taken_over(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()  # its process id now names no process
    (tmp_path / records.CLAIM).write_text(f"{gone.pid} {platform.node()}\n")
    records.claim(str(tmp_path), must_be_empty=False)
    assert f"claimed by process {gone.pid}, which is gone: taken over" in capsys.readouterr().err
    assert (tmp_path / records.CLAIM).read_text().split()[0] == str(os.getpid())
    records.release(str(tmp_path))
    (tmp_path / records.CLAIM).write_text(f"{os.getppid()} {platform.node()}\n")  # alive
    with pytest.raises(UserError, match='in use by another command'):
        records.claim(str(tmp_path), must_be_empty=False)
    (tmp_path / records.CLAIM).write_text(f"{gone.pid} another-machine\n")  # not ours to judge
    with pytest.raises(UserError, match='in use by another command'):
        records.claim(str(tmp_path), must_be_empty=False)
