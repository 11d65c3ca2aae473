"""
data.py: what the models train on, and the tokenizers: characters, or byte-level BPE.

A data file is read in one of two formats. `lines` (the reference's, `input.txt`-style):
UTF-8 text, one document a line; blank lines are skipped and each line is stripped; a
document is framed by BOS tokens. `text` (nanoGPT's shakespeare_char): the whole file is one
stream of characters, newlines included, with no BOS; it trains on windows of it.

Two data sets ship beside this file: makemore's names.txt (`NAMES`, the reference's) and
tinyshakespeare.txt (`SHAKESPEARE`). The reference script's own workflow, an `input.txt`
downloaded when missing, is kept: a missing file named input.txt is fetched, pinned by
commit and checked by sha256. Every problem a user can cause raises `DataError` with a
one-line message.
"""
import codecs
import hashlib
import os
import re
import site
import sys
import tempfile
import time
import urllib.request

import numpy as np

# The shipped data sets: beside this file in a checkout (or a copy of it), and where pip
# puts a package's data files (share/microgpt-lab under its prefix) in an installed copy.
SHIPPED = next((folder for folder in (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.join(sys.prefix, 'share', 'microgpt-lab'),
    os.path.join(site.getuserbase(), 'share', 'microgpt-lab'))
    if os.path.isfile(os.path.join(folder, 'names.txt'))), os.path.dirname(os.path.abspath(__file__)))
NAMES = os.path.join(SHIPPED, 'names.txt')
SHAKESPEARE = os.path.join(SHIPPED, 'tinyshakespeare.txt')
FORMATS = ('lines', 'text')
NAMES_URL = ('https://raw.githubusercontent.com/karpathy/makemore/'
             '988aa59e4d8fefa526d06f3b453ad116258398d4/names.txt')
NAMES_SHA256 = '0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d'


class DataError(Exception):
    """A problem with the input data, told in one line."""


# ---------------------------------------------------------------------------
# Reading and fetching
def read_bytes(path):
    """The bytes of a regular file, as they are on disk (its sha256 is theirs)."""
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, not a text file")
    if os.path.exists(path) and not os.path.isfile(path):
        raise DataError(f"{path} is not a regular file")  # a FIFO or /dev/zero would never end
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None


def parse(raw, data_format, name):
    """A data file's bytes (named `name` in messages) as documents (a list of str) or a
    text (one str). A UTF-8 byte-order mark is no character of the text; bytes that are not
    UTF-8 are an error that says where they are."""
    raw = raw[3:] if raw.startswith(b'\xef\xbb\xbf') else raw
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b'\n') + 1
        column = e.start - (raw.rfind(b'\n', 0, e.start) + 1) + 1
        raise DataError(f"{name}, line {line}: bytes that are not UTF-8 (at column {column})") from None
    return text_of(text, name) if data_format == 'text' else docs_of(text, name)


def docs_of(text, name):
    """The non-empty, stripped lines of a text, in order."""
    # the lines as bytes.splitlines() cuts them (at \n, \r\n, \r), not str's wider set
    docs = [line.strip() for line in re.split(r'\r\n|\r|\n', text) if line.strip()]
    if not docs:
        raise DataError(f"{name} has no documents (it is empty or holds only blank lines)")
    if len(set(''.join(docs))) < 2:
        raise DataError(f"{name} uses only one distinct character: there is nothing to learn")
    return docs


def text_of(text, name):
    """The whole text as one string: newlines are characters, nothing is stripped."""
    if len(set(text)) < 2:
        raise DataError(f"{name} uses fewer than two distinct characters: there is nothing to learn")
    return text


def read_docs(path):
    return parse(read_bytes(path), 'lines', path)


def read_text(path):
    return parse(read_bytes(path), 'text', path)


def fetch_names(path, url=NAMES_URL, sha256=NAMES_SHA256, timeout=30):
    """Download the reference data set to `path`: into a temporary file beside it, renamed
    into place only once its checksum matches, so a failure leaves no file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.download-', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f, urllib.request.urlopen(url, timeout=timeout) as r:
            f.write(r.read())
        with open(tmp, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != sha256:
            raise DataError(f"download of {url} has sha256 {digest}, expected {sha256}")
        os.replace(tmp, path)
    except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
        raise DataError(f"cannot download {url} ({getattr(e, 'reason', e)}); "
                        "pass a local file with --data PATH") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path=NAMES, data_format='lines', fetch=True):
    """Read `path` in data_format: documents (a list of str) or a text (one str). A missing
    `input.txt` (the reference script's file) is first downloaded there when `fetch` is on;
    any other missing file is an error."""
    if not os.path.exists(path) and os.path.basename(path) == 'input.txt':
        if not fetch:
            raise DataError(f"{path} not found (and --no-fetch is set): pass a file with --data PATH")
        print(f"{path} not found: downloading the names data set from {NAMES_URL}")
        fetch_names(path)
    return parse(read_bytes(path), data_format, path)


def sha256_of(path):
    with open(path, 'rb') as f:
        return sha256(f.read())


def sha256(raw):
    return hashlib.sha256(raw).hexdigest()


# ---------------------------------------------------------------------------
# Tokenizers. Either makes ids of text and text of ids, frames a document, and counts the
# UTF-8 bytes that ids stand for (a special token, BOS, stands for none): bits per byte
# compare models whose tokens differ.
class Tokenizer:
    """One id per character; for documents also BOS, the last id, which marks a
    document's start and end."""
    def __init__(self, chars, bos=True):
        self.chars = list(chars)                   # id -> character
        self.ids = {ch: i for i, ch in enumerate(self.chars)}
        self.bos = len(self.chars) if bos else None
        self.vocab_size = len(self.chars) + bos
        self.sizes = np.array([len(ch.encode('utf-8')) for ch in self.chars] + [0] * bos)  # id -> bytes

    @classmethod
    def from_docs(cls, docs):
        return cls(sorted(set(''.join(docs))))

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)), bos=False)

    def encode(self, text):
        try:
            return [self.ids[ch] for ch in text]
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def encode_many(self, texts):
        return [self.encode(text) for text in texts]

    def decode(self, ids):
        return ''.join(self.chars[i] for i in ids if i != self.bos)

    def decoder(self):
        """decode(), for ids that come a few at a time: the text each adds."""
        return self.decode

    def token_text(self, i):
        return self.chars[i]

    def n_bytes(self, ids):
        """The UTF-8 bytes that ids stand for."""
        return int(self.sizes[np.asarray(ids, dtype=np.int64)].sum())

    def frame(self, doc, block_size):
        """[BOS] + ids + [BOS], cut to the block_size + 1 tokens a block can train on."""
        return self.frame_many([doc], block_size)[0]

    def frame_many(self, docs, block_size):
        return [([self.bos] + ids + [self.bos])[:block_size + 1] for ids in self.encode_many(docs)]

    def __eq__(self, other):
        return type(other) is type(self) and (self.chars, self.bos) == (other.chars, other.bos)


SPLIT_PATTERNS = ('gpt4', 'gpt2', 'none')  # bpe.PATTERNS' names (a test holds them equal)


def _bpe():
    """bpe.py, loaded on first use: it loads numba, which a run of characters never needs."""
    try:
        import bpe
    except (ImportError, ValueError) as e:  # ValueError: numba refuses its environment
        raise DataError(f"byte-level BPE needs numba, which does not start here: {e}") from None
    return bpe


class BPETokenizer(Tokenizer):
    """Byte-level BPE (bpe.py): ids 0..255 are bytes, 256 + i is merge i's token; for
    documents also BOS, the last id. A token may end inside a character: decode() reads such
    bytes as U+FFFD, decoder() holds them until the character is whole."""
    def __init__(self, merges, split='gpt4', bos=True):
        self.merges, self.split = [tuple(m) for m in merges], split
        self.vocab = _bpe().vocabulary(self.merges)            # id -> its bytes
        self.bos = len(self.vocab) if bos else None
        self.vocab_size = len(self.vocab) + bos
        self.sizes = np.array([len(b) for b in self.vocab] + [0] * bos)

    def encode(self, text):
        return _bpe().encode_fast(text, self.merges, self.split).tolist()

    def encode_many(self, texts):
        return [ids.tolist() for ids in _bpe().encode_many(texts, self.merges, self.split)]

    def decode(self, ids):
        return _bpe().decode([i for i in ids if i != self.bos], self.vocab)

    def decoder(self):
        utf8 = codecs.getincrementaldecoder('utf-8')(errors='replace')
        return lambda ids: utf8.decode(b''.join(self.vocab[i] for i in ids if i != self.bos))

    def token_text(self, i):
        return self.vocab[i].decode('utf-8', errors='replace')

    def record(self):
        """What tokenizer.json and a checkpoint hold of it."""
        return dict(pattern=_bpe().PATTERNS[self.split] or '', split_pattern=self.split,
                    merges=[list(m) for m in self.merges],
                    special={} if self.bos is None else {'<BOS>': self.bos}, vocab_size=self.vocab_size)

    def __eq__(self, other):
        return type(other) is type(self) and self.record() == other.record()


def train_bpe(texts, vocab_size, split='gpt4', bos=True):
    """(tokenizer, seconds): BPE trained on texts to vocab_size ids (BOS among them, if
    bos), or fewer if they run out of pairs to merge; the seconds are the training's alone."""
    if vocab_size < 256 + bos:
        raise DataError(f"--vocab-size {vocab_size} is below {256 + bos}: the 256 bytes"
                        f"{' and BOS' if bos else ''} are every byte-level vocabulary's")
    _bpe().train_fast(['ab'], 1, split)                 # numba's compile, not timed
    t0 = time.perf_counter()
    merges = _bpe().train_fast(texts, vocab_size - 256 - bos, split)
    return BPETokenizer(merges, split, bos), time.perf_counter() - t0


CORE_FIELDS = ('pattern', 'split_pattern', 'merges', 'special', 'vocab_size')  # a checkpoint's
TOKENIZER_FIELDS = (*CORE_FIELDS, 'train_tokens', 'val_tokens', 'train_bytes', 'val_bytes', 'train_s',
                    'data', 'data_sha256', 'data_format', 'val_fraction', 'seed')


def read_tokenizer(path, record, fields=TOKENIZER_FIELDS):
    """The BPETokenizer of a tokenizer.json's record (a dict), every field checked: a
    DataError names the first that is missing or not what `tokenizer` writes. fields: those
    it must have (a checkpoint's copy: CORE_FIELDS)."""
    def bad(field, why):
        return DataError(f"{path}: {field} {why}: not a tokenizer that `tokenizer` wrote")
    if not isinstance(record, dict):
        raise bad('the file', 'is not a JSON object')
    for field in fields:
        if field not in record:
            raise bad(field, 'is missing')
    split = record['split_pattern']
    if split not in SPLIT_PATTERNS:
        raise bad('split_pattern', f"must be {', '.join(SPLIT_PATTERNS)}, got {split!r}")
    if record['pattern'] != (_bpe().PATTERNS[split] or ''):
        raise bad('pattern', f"is not {split}'s")
    merges = record['merges']
    if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(type(x) is int and 0 <= x < 256 + i for x in m)
            for i, m in enumerate(merges)):
        raise bad('merges', "must be [[a, b], ...], merge i of two tokens below 256 + i")
    special = record['special']
    if not isinstance(special, dict) or special not in ({}, {'<BOS>': 256 + len(merges)}):
        raise bad('special', f"must be {{}} or {{\"<BOS>\": {256 + len(merges)}}}")
    if record['vocab_size'] != 256 + len(merges) + len(special):
        raise bad('vocab_size', f"must be 256 + merges + special = {256 + len(merges) + len(special)}")
    counts = [f for f in fields if f.endswith(('_tokens', '_bytes'))]
    for field in counts:
        if type(record[field]) is not int or record[field] < 0:
            raise bad(field, 'must be a count')
    if 'train_s' in fields and (type(record['train_s']) not in (int, float) or not record['train_s'] >= 0):
        raise bad('train_s', 'must be seconds')
    if 'data_sha256' in fields and not (isinstance(record['data_sha256'], str)
                                        and re.fullmatch('[0-9a-f]{64}', record['data_sha256'])):
        raise bad('data_sha256', 'must be a sha256')
    if 'data_format' in fields and record['data_format'] != ('lines' if special else 'text'):
        raise bad('data_format', f"must be {'lines' if special else 'text'} (BOS is the documents')")
    if 'data' in fields and not isinstance(record['data'], str):
        raise bad('data', 'must be a path')
    if 'val_fraction' in fields and not (type(record['val_fraction']) in (int, float)
                                         and 0 <= record['val_fraction'] < 1):
        raise bad('val_fraction', 'must be a number in [0, 1)')
    if 'seed' in fields and not (type(record['seed']) is int if special else record['seed'] is None):
        raise bad('seed', 'must be ' + ('an integer (the split of documents)' if special else 'null for a text'))
    return BPETokenizer(merges, split, bos=bool(special))


# ---------------------------------------------------------------------------
# Shuffle and split, with the run's one random generator.
def n_validation(n_docs, val_fraction):
    """How many of n_docs documents split_docs holds out."""
    n_val = int(n_docs * val_fraction)
    if val_fraction > 0 and n_val == 0 and n_docs >= 2:
        n_val = 1  # a small file still gets a validation document
    return n_val


def split_docs(docs, rng, val_fraction=0.1):
    """Shuffle a copy of docs with rng, then hold out the last val_fraction for validation.
    Returns (train_docs, val_docs); training step i uses train_docs[i % len(train_docs)]."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    docs = list(docs)
    rng.shuffle(docs)
    n_val = n_validation(len(docs), val_fraction)
    return docs[:len(docs) - n_val], docs[len(docs) - n_val:]


# ---------------------------------------------------------------------------
# A text: the first part trains, the rest validates, contiguous, as nanoGPT splits it.
def split_text(ids, val_fraction=0.1):
    """(train, val): the first 1 - val_fraction of the token ids, and the rest."""
    cut = int(len(ids) * (1 - val_fraction))
    return ids[:cut], ids[cut:]


def random_windows(ids, rng, batch_size, block_size):
    """batch_size windows of block_size + 1 tokens at offsets drawn from rng, one after
    another: a training step's batch (a window's first block_size tokens predict its last)."""
    offsets = [rng.randrange(len(ids) - block_size) for _ in range(batch_size)]
    return np.stack([ids[o:o + block_size + 1] for o in offsets])       # [B, block_size + 1]


def tiled_windows(ids, block_size):
    """Every non-overlapping window of block_size + 1 tokens, at offsets 0, block_size, ...:
    the validation set of a text, all of it."""
    n = (len(ids) - 1) // block_size
    starts = np.arange(n)[:, None] * block_size                            # [n, 1]
    return ids[starts + np.arange(block_size + 1)]                         # [n, block_size + 1]
