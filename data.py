"""
data.py: the documents both paths train on, and the character tokenizer.

A data file is `input.txt`-style: UTF-8 text, one document a line; blank lines are
skipped and each line is stripped. The reference data set, makemore's names.txt,
ships beside this file (`NAMES`). The reference script's own workflow, an `input.txt`
downloaded when missing, is kept: a missing file named input.txt is fetched, pinned
by commit and checked by sha256. Every problem a user can cause raises `DataError`
with a one-line message.
"""
import hashlib
import os
import tempfile
import urllib.request

NAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'names.txt')  # shipped
NAMES_URL = ('https://raw.githubusercontent.com/karpathy/makemore/'
             '988aa59e4d8fefa526d06f3b453ad116258398d4/names.txt')
NAMES_SHA256 = '0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d'


class DataError(Exception):
    """A problem with the input data, told in one line."""


# ---------------------------------------------------------------------------
# Reading and fetching
def read_docs(path):
    """The non-empty, stripped lines of a UTF-8 text file, in file order."""
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, not a text file")
    if os.path.exists(path) and not os.path.isfile(path):
        raise DataError(f"{path} is not a regular file")  # a FIFO or /dev/zero would never end
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if raw.startswith(b'\xef\xbb\xbf'):
        raw = raw[3:]  # a UTF-8 byte-order mark is not a character of the first document
    docs = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode('utf-8').strip()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}, line {lineno}: bytes that are not UTF-8 "
                            f"(at column {e.start + 1})") from None
        if text:
            docs.append(text)
    if not docs:
        raise DataError(f"{path} has no documents (it is empty or holds only blank lines)")
    if len(set(''.join(docs))) < 2:
        raise DataError(f"{path} uses only one distinct character: there is nothing to learn")
    return docs


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


def load_docs(path=NAMES, fetch=True):
    """Read `path`. A missing `input.txt` (the reference script's file) is first downloaded
    there when `fetch` is on; any other missing file is an error."""
    if not os.path.exists(path) and os.path.basename(path) == 'input.txt':
        if not fetch:
            raise DataError(f"{path} not found (and --no-fetch is set): pass a file with --data PATH")
        print(f"{path} not found: downloading the names data set from {NAMES_URL}")
        fetch_names(path)
    return read_docs(path)


def sha256_of(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------
# Tokenizer: one id per character, plus BOS, which marks a document's start and end.
class Tokenizer:
    def __init__(self, chars):
        self.chars = list(chars)                   # id -> character
        self.ids = {ch: i for i, ch in enumerate(self.chars)}
        self.bos = len(self.chars)                 # the last id
        self.vocab_size = len(self.chars) + 1

    @classmethod
    def from_docs(cls, docs):
        return cls(sorted(set(''.join(docs))))

    def encode(self, text):
        try:
            return [self.ids[ch] for ch in text]
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        return ''.join(self.chars[i] for i in ids if i != self.bos)

    def frame(self, doc, block_size):
        """[BOS] + ids + [BOS], cut to the block_size + 1 tokens a block can train on."""
        return ([self.bos] + self.encode(doc) + [self.bos])[:block_size + 1]


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
