"""data.py: reading documents and texts, the download, the tokenizer, shuffle, split and windows."""
import hashlib
import os
import random
import re
import subprocess
import sys

import numpy as np

import pytest
from hypothesis import given, strategies as st

import data
from data import DataError, Tokenizer
from conftest import ROOT

VOCAB = 'abcdefgh'
words = st.text(alphabet=VOCAB, max_size=30)


def write(tmp_path, content, name='input.txt'):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


# ---------------------------------------------------------------------------
# Reading
def test_documents_are_the_stripped_non_empty_lines_in_order(tmp_path):
    path = write(tmp_path, b'  emma \n\n\t\nolivia\r\nava')
    assert data.read_docs(path) == ['emma', 'olivia', 'ava']


def test_a_byte_order_mark_is_not_part_of_the_first_document(tmp_path):
    assert data.read_docs(write(tmp_path, b'\xef\xbb\xbfab\nba\n')) == ['ab', 'ba']


@pytest.mark.parametrize('content, message', [
    (b'', 'no documents'),
    (b'\n  \n\t\n', 'no documents'),
    (b'ab\ncd\n\xff\xfeef\n', 'line 3: bytes that are not UTF-8'),
    (b'aaa\naa\n', 'one distinct character'),
])
def test_bad_files_give_a_clear_error(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        data.read_docs(write(tmp_path, content))


def test_a_directory_a_device_or_a_missing_file_gives_a_clear_error(tmp_path):
    with pytest.raises(DataError, match='is a directory'):
        data.read_docs(str(tmp_path))
    with pytest.raises(DataError, match='is not a regular file'):
        data.read_docs('/dev/zero')  # would never end
    with pytest.raises(DataError, match='not found'):
        data.load(str(tmp_path / 'nope.txt'), fetch=False)


def test_only_a_missing_input_txt_is_downloaded(tmp_path, monkeypatch):
    fetched = []

    def fetch(path):
        fetched.append(path)
        (tmp_path / 'input.txt').write_text('ab\nba\n')
    monkeypatch.setattr(data, 'fetch_names', fetch)
    with pytest.raises(DataError, match='nope.txt not found'):
        data.load(str(tmp_path / 'nope.txt'))  # a typo must not become names.txt
    with pytest.raises(DataError, match='--no-fetch is set'):
        data.load(str(tmp_path / 'input.txt'), fetch=False)
    assert fetched == []
    assert data.load(str(tmp_path / 'input.txt')) == ['ab', 'ba']
    assert fetched == [str(tmp_path / 'input.txt')]


def test_the_default_data_is_the_shipped_names_beside_the_code(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    docs = data.load()
    assert len(docs) == 32033 and docs[:3] == ['emma', 'olivia', 'ava']


# ---------------------------------------------------------------------------
# Fetching: a local file:// URL stands in for the network
def test_fetch_verifies_the_checksum_and_renames_into_place(tmp_path):
    src = write(tmp_path, b'ab\nba\n', 'src.txt')
    dest = tmp_path / 'input.txt'
    data.fetch_names(str(dest), url=f'file://{src}',
                     sha256=hashlib.sha256(b'ab\nba\n').hexdigest())
    assert dest.read_bytes() == b'ab\nba\n'


def test_fetch_with_a_wrong_checksum_leaves_no_file(tmp_path):
    src = write(tmp_path, b'ab\nba\n', 'src.txt')
    with pytest.raises(DataError, match='sha256'):
        data.fetch_names(str(tmp_path / 'input.txt'), url=f'file://{src}', sha256='0' * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['src.txt']


def test_fetch_that_fails_names_the_url_and_the_way_out_and_leaves_no_file(tmp_path):
    url = f'file://{tmp_path}/missing.txt'
    with pytest.raises(DataError, match=f'cannot download {re.escape(url)}.*--data PATH'):
        data.fetch_names(str(tmp_path / 'input.txt'), url=url)
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_names_are_the_pinned_download_byte_for_byte():
    assert data.sha256_of(data.NAMES) == data.NAMES_SHA256
    with open(data.NAMES, 'rb') as f:  # the md5 of the reference's input.txt
        assert hashlib.md5(f.read()).hexdigest() == '401b3c4cac9e28a586ed15e81256680d'


# ---------------------------------------------------------------------------
# Tokenizer
@given(words)
def test_encode_decode_round_trip(text):
    tok = Tokenizer(VOCAB)
    ids = tok.encode(text)
    assert all(0 <= i < tok.bos for i in ids)
    assert tok.decode(ids) == text


def test_vocabulary_is_sorted_unique_characters_and_bos_is_the_last_id():
    tok = Tokenizer.from_docs(['cab', 'bad'])
    assert tok.chars == ['a', 'b', 'c', 'd'] and tok.bos == 4 and tok.vocab_size == 5


def test_unknown_character_is_a_clear_error_naming_it():
    with pytest.raises(DataError, match="'z' is not in the vocabulary"):
        Tokenizer('ab').encode('abz')


@given(words, st.integers(1, 40))
def test_frame_puts_bos_around_the_document_and_cuts_to_block_size_plus_one(text, block_size):
    tok = Tokenizer(VOCAB)
    framed = tok.frame(text, block_size)
    full = [tok.bos] + tok.encode(text) + [tok.bos]
    assert framed == full[:block_size + 1]
    assert framed[0] == tok.bos and len(framed) == min(len(text) + 2, block_size + 1)


# ---------------------------------------------------------------------------
# Shuffle and split
def test_split_shuffles_with_the_generator_then_holds_out_the_tail():
    docs = [f'd{i}' for i in range(100)]
    train, val = data.split_docs(docs, random.Random(7), 0.1)
    expected = list(docs)
    random.Random(7).shuffle(expected)
    assert train == expected[:90] and val == expected[90:]
    assert docs == [f'd{i}' for i in range(100)]  # the caller's list is left alone


def test_split_keeps_a_validation_document_for_small_files_and_none_at_zero():
    assert len(data.split_docs(['a', 'b', 'c'], random.Random(0), 0.1)[1]) == 1
    assert data.split_docs(['a', 'b', 'c'], random.Random(0), 0.0)[1] == []
    assert data.split_docs(['a'], random.Random(0), 0.5) == (['a'], [])  # one document trains
    with pytest.raises(DataError):
        data.split_docs(['a', 'b'], random.Random(0), 1.0)


@given(st.integers(0, 5000), st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.99]))
def test_n_validation_is_the_size_of_the_held_out_part(n, fraction):
    train, val = data.split_docs(list(range(n)), random.Random(0), fraction)
    assert len(val) == data.n_validation(n, fraction) and len(train) + len(val) == n
    assert len(train) >= 1 or n == 0


# ---------------------------------------------------------------------------
# A text: one stream, split in two, windows
def test_a_text_is_read_whole_newlines_and_all(tmp_path):
    assert data.read_text(write(tmp_path, b'\xef\xbb\xbfab\n\n c\r\n')) == 'ab\n\n c\r\n'
    with pytest.raises(DataError, match='line 2: bytes that are not UTF-8 \\(at column 3\\)'):
        data.read_text(write(tmp_path, b'ab\ncd\xffe\n'))
    with pytest.raises(DataError, match='fewer than two distinct characters'):
        data.read_text(write(tmp_path, b'aaaa'))
    tok = Tokenizer.from_text('ba\nab')
    assert tok.chars == ['\n', 'a', 'b'] and tok.bos is None and tok.vocab_size == 3


def test_the_shipped_shakespeare_is_karpathys_tinyshakespeare():
    with open(data.SHAKESPEARE, 'rb') as f:
        raw = f.read()
    assert hashlib.md5(raw).hexdigest() == '6fb458f1232090904fb40fe944165e91'
    assert len(data.read_text(data.SHAKESPEARE)) == 1115394


@given(st.integers(2, 500), st.sampled_from([0.0, 0.1, 0.5]))
def test_split_text_keeps_the_first_part_for_training(n, fraction):
    ids = np.arange(n)
    train, val = data.split_text(ids, fraction)
    assert len(train) == int(n * (1 - fraction)) and np.array_equal(np.concatenate([train, val]), ids)


def test_random_windows_come_from_the_generator_in_order_and_fit_the_text():
    ids = np.arange(100)
    windows = data.random_windows(ids, random.Random(3), 5, 8)
    r = random.Random(3)
    offsets = [r.randrange(100 - 8) for _ in range(5)]
    assert windows.shape == (5, 9) and [w[0] for w in windows] == offsets
    assert all(np.array_equal(w, np.arange(w[0], w[0] + 9)) for w in windows)
    last = data.random_windows(np.arange(9), random.Random(0), 3, 8)  # one offset fits
    assert np.array_equal(last, np.tile(np.arange(9), (3, 1)))


@given(st.integers(2, 300), st.integers(1, 20))
def test_tiled_windows_cover_the_text_without_overlap(n, block_size):
    windows = data.tiled_windows(np.arange(n), block_size)
    assert len(windows) == (n - 1) // block_size
    for i, w in enumerate(windows):  # window i predicts positions i*bs+1 .. (i+1)*bs
        assert np.array_equal(w, np.arange(i * block_size, (i + 1) * block_size + 1))


def test_an_installed_copy_not_editable_has_the_shipped_data(tmp_path):
    """`pip install .` (a wheel, not a link to the checkout): names.txt and tinyshakespeare.txt
    come with it, and the default data is found from anywhere."""
    pip = [sys.executable, '-m', 'pip', '-q', '--disable-pip-version-check']
    subprocess.run([*pip, 'wheel', '--no-deps', '-w', tmp_path / 'wheel', ROOT], check=True,
                   cwd=tmp_path, timeout=300)
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', tmp_path / 'venv'], check=True)
    python = tmp_path / 'venv' / 'bin' / 'python'
    subprocess.run([*pip, '--python', python, 'install', '--no-deps',
                    *(tmp_path / 'wheel').glob('*.whl')], check=True, timeout=300)
    deps = os.path.dirname(os.path.dirname(np.__file__))  # numpy and the rest, not the project
    p = subprocess.run([python, '-c', 'import data; print(data.__file__); print(data.NAMES); '
                        'print(len(data.load()), len(data.load(data.SHAKESPEARE, "text")))'],
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=deps), capture_output=True,
                       text=True, timeout=60)
    module, names, sizes = p.stdout.splitlines()
    assert p.returncode == 0 and module.startswith(str(tmp_path / 'venv')), p.stderr
    assert names.startswith(str(tmp_path / 'venv')) and sizes == '32033 1115394'
