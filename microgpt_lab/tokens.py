"""
tokens.py: what a run trains on, as tokens: its data split, tokenized and checked, and what
a step takes of it; the tokenizer; and the `tokenizer` command.

A run reads characters (--tokenizer char, the reference's) or byte-level BPE (bpe.py):
trained on the run's training part alone (--tokenizer bpe --vocab-size N), or trained
before by `tokenizer` and read from its tokenizer.json, which must have been trained on the
same data split the same way (else its merges have seen the run's validation part).

tokenizer.json holds the merges (merge i makes token 256 + i), the split pattern, the
special tokens (BOS, for documents), and what it was trained on and how it encodes it: the
data's path, sha256, format and split, the tokens and bytes of both parts, and the seconds
the training took (numba's compile apart).
"""
import os
import random
from typing import NamedTuple

import numpy as np

import data
from microgpt_lab import UserError, models, provenance, records


# ---------------------------------------------------------------------------
# Data: the split, and what a step trains on.
class RunData(NamedTuple):
    tok: data.Tokenizer  # or a data.BPETokenizer
    train: object       # framed training documents, or the training part of a text's ids
    val: object         # framed validation documents, or a text's windows [n, block + 1]
    check: object       # a batch to check the last update on when there is no validation
    sizes: str          # what the run prints of the split
    docs: tuple = None  # (training, validation) documents, as text; None for a text
    val_bytes: int = 0  # the UTF-8 bytes that the validation targets stand for
    tokenizer: dict = None  # a BPE tokenizer's tokenizer.json (record()); else None


def run_data(cfg, source, rng, sha256=None):
    """A run's data (documents, or a text) split and tokenized: a text's first part trains
    and the rest validates, all of its windows; documents are shuffled with rng and the
    last ones held out (all in tensor mode; 200 in scalar mode, unless --val-docs). The
    tokenizer is --tokenizer's, made of the training part alone (sha256: the data's)."""
    bs, text = cfg['block_size'], cfg['data_format'] == 'text'
    if text:
        parts = data.split_text(source, cfg['val_fraction'])   # (training, validation) characters
    else:
        parts = data.split_docs(source, rng, cfg['val_fraction'])
    tok, record = for_run(cfg, parts, sha256)
    if text:
        train, val = (np.array(ids, dtype=np.int64) for ids in tok.encode_many(parts))
        if len(train) <= bs:
            raise UserError(f"the text's training part ({len(train)} tokens) must be longer than "
                            f"--block-size ({bs})")
        windows = data.tiled_windows(val, bs)
        if not len(windows) and cfg['tokenizer'] != 'char' and cfg['val_fraction'] > 0:
            raise UserError(f"the text's validation part is {len(val)} tokens: not a window of "
                            f"--block-size ({bs}) + 1 of them to validate on")
        return RunData(tok, train, windows, train[None, :bs + 1],
                       f"{len(source)} characters ({len(parts[0])} train, {len(parts[1])} validation)"
                       + ('' if cfg['tokenizer'] == 'char' else f"; {len(train)} + {len(val)} tokens"),
                       val_bytes=tok.n_bytes(windows[:, 1:]), tokenizer=record)
    train_docs, val_docs = parts
    train, val = tok.frame_many(train_docs, bs), tok.frame_many(val_docs[:val_docs_of(cfg)], bs)
    return RunData(tok, train, val, train[:1],
                   f"{len(source)} ({len(train_docs)} train, {len(val_docs)} validation)",
                   (train_docs, val_docs), sum(tok.n_bytes(doc[1:]) for doc in val), record)


def val_docs_of(cfg):
    """How many held-out documents a run evaluates: None for all of them (tensor mode's
    default), else at most this many (scalar mode's default: 200, its evaluation is slow)."""
    if cfg['val_docs'] is None and cfg['mode'] == 'tensor':
        return None
    return cfg['val_docs'] or 200


def batches(cfg, d, rng):
    """What the model's train() takes: the framed documents (step s takes the s-th batch of
    them), or for a text a function of the step, which draws its windows from rng."""
    if cfg['data_format'] == 'text':
        return lambda step: data.random_windows(d.train, rng, cfg['batch_size'], cfg['block_size'])
    return d.train


def check_data(cfg, source, needed_by=None, at_once=1):
    """A UserError, before anything runs, if the data (documents or a text) cannot make the
    run: a text too short for a window, or no validation data when validation is asked for
    (--eval-every, or by `needed_by`, e.g. 'ablate'); or `at_once` such runs too big for
    the memory; or more threads than this machine's BLAS runs."""
    models.threads_of(cfg)
    if cfg['data_format'] == 'text':
        train, val = data.split_text(source, cfg['val_fraction'])
        if len(train) <= cfg['block_size']:
            raise UserError(f"the text's training part ({len(train)} characters) must be longer "
                            f"than --block-size ({cfg['block_size']})")
        no_validation = (len(val) - 1) // cfg['block_size'] < 1  # no whole window (or no text)
        vocab, longest = len(set(source)), cfg['block_size']
    else:
        no_validation = data.n_validation(len(source), cfg['val_fraction']) == 0
        vocab, longest = len(set(''.join(source))) + 1, max(map(len, source)) + 1
    if no_validation and (cfg['eval_every'] or needed_by):
        what = 'a window of --block-size characters' if cfg['data_format'] == 'text' else \
            f"a document ({len(source)} document(s))"
        raise UserError(f"{needed_by or '--eval-every'} needs validation data, but --val-fraction "
                        f"{cfg['val_fraction']} leaves not even {what} for it")
    if cfg['tokenizer'] not in ('char', 'bpe'):
        vocab = check_tokenizer(cfg, data.sha256_of(cfg['data']))[0].vocab_size
    models.check_memory(cfg, max(vocab, cfg['vocab_size'] or 0), longest, at_once)


def check_tokenizer(cfg, sha256):
    """(tokenizer, record) of a run with --tokenizer PATH, checked against its data (sha256)
    and split: else its merges would have seen the run's validation part."""
    tok, rec = load(cfg['tokenizer'])
    check_fits(rec, cfg, sha256, cfg['tokenizer'])
    return tok, rec


# ---------------------------------------------------------------------------
# The tokenizer
def for_run(cfg, parts, sha256):
    """(tokenizer, tokenizer.json's record or None) of a run whose data is split into parts
    (training, validation): documents, or a text's characters; sha256: the data's."""
    text = cfg['data_format'] == 'text'
    if cfg['tokenizer'] == 'char':
        everything = parts[0] + parts[1]
        return (data.Tokenizer.from_text(everything) if text else data.Tokenizer.from_docs(everything)), None
    if cfg['tokenizer'] == 'bpe':
        tok, train_s = train(parts[0], cfg['vocab_size'], cfg['split_pattern'], text)
        return tok, record(tok, parts, train_s, cfg, sha256)
    return check_tokenizer(cfg, sha256)


def same_merges(rec, path):
    """A UserError if the tokenizer.json at path (a recorded run's) holds other merges than
    rec (--from: a tokenizer file retrained since)."""
    if os.path.exists(path) and records.read_json(path, 'a tokenizer.json', in_folder=False).get('merges') != rec['merges']:
        raise UserError(f"the tokenizer is not the one {path} records: the file it was read from has changed")


def train(train_part, vocab_size, split, text):
    """(tokenizer, seconds): BPE trained on a training part (documents, or a text), said in
    a line; with a note if the part makes fewer merges than vocab_size asks."""
    texts = [train_part] if text else train_part
    tok, train_s = data.train_bpe(texts, vocab_size, split, bos=not text)
    wanted = vocab_size - 256 - (not text)
    print(f"tokenizer: BPE, {tok.vocab_size} ids ({len(tok.merges)} merges, {split} split) trained on "
          f"the training part in {train_s:.2f} s")
    if len(tok.merges) < wanted:
        print(f"note: the training part makes only {len(tok.merges)} merges, not the {wanted} that "
              f"--vocab-size {vocab_size} asks: every chunk of it is one token by then")
    return tok, train_s


def record(tok, parts, train_s, cfg, sha256):
    """tokenizer.json's record: the tokenizer, the tokens and bytes of both parts, and what
    it was trained on."""
    text = cfg['data_format'] == 'text'
    counts = {}
    for name, part in zip(('train', 'val'), parts):
        texts = [part] if text else part
        counts[f"{name}_tokens"] = sum(map(len, tok.encode_many(texts)))
        counts[f"{name}_bytes"] = sum(len(t.encode('utf-8')) for t in texts)
    return dict(tok.record(), **counts, train_s=train_s, data=os.path.abspath(cfg['data']),
                data_sha256=sha256, data_format=cfg['data_format'], val_fraction=cfg['val_fraction'],
                seed=None if text else cfg['seed'])


def load(path):
    """(tokenizer, record) of a tokenizer.json, every field checked."""
    rec = records.read_json(path, 'a tokenizer.json', in_folder=False)
    return data.read_tokenizer(path, rec), rec


def check_fits(rec, cfg, sha256, path):
    """A UserError if the tokenizer.json's record was not trained on this run's training
    part: other data, another format, or another split."""
    if rec['data_sha256'] != sha256:
        raise UserError(f"{path} was trained on other data (sha256 {rec['data_sha256'][:12]}...), "
                        f"not on {cfg['data']}")
    if rec['data_format'] != cfg['data_format']:
        raise UserError(f"{path} was trained on {cfg['data']} as {rec['data_format']}, not "
                        f"--data-format {cfg['data_format']}")
    lines = cfg['data_format'] == 'lines'
    if rec['val_fraction'] != cfg['val_fraction'] or (lines and rec['seed'] != cfg['seed']):
        split = lambda r: f"--val-fraction {r['val_fraction']}" + (f" --seed {r['seed']}" if lines else '')
        raise UserError(f"{path} was trained on the training part of {split(rec)}: this run's "
                        f"({split(cfg)}) validation part would hold text it was trained on")


# ---------------------------------------------------------------------------
# The command
def in_words(tok, i):
    """Merge i in words: 't' + 'h' -> 'th'."""
    a, b = tok.merges[i]
    return f"{tok.token_text(a)!r} + {tok.token_text(b)!r} -> {tok.token_text(256 + i)!r}"


def tokenizer_command(cfg):
    """`cli.py tokenizer`: BPE trained on the training part of --data (split as `train`
    splits it), its first merges and its bytes per token on both parts printed, and
    tokenizer.json written to --out."""
    if cfg['vocab_size'] is None:
        raise UserError("tokenizer needs --vocab-size N: how many ids, the 256 bytes among them")
    source = data.load(cfg['data'], cfg['data_format'], cfg['fetch'])
    text = cfg['data_format'] == 'text'
    parts = data.split_text(source, cfg['val_fraction']) if text else \
        data.split_docs(source, random.Random(cfg['seed']), cfg['val_fraction'])
    if text and not parts[0]:
        raise UserError(f"--val-fraction {cfg['val_fraction']} leaves no text to train on")
    size = sum(len(t.encode('utf-8')) for t in ([parts[0]] if text else parts[0]))
    print(f"training on {len(parts[0])} {'characters' if text else 'documents'} ({size / 1e6:.2f} MB) "
          f"of {cfg['data']}, the training part; {len(parts[1])} held out")
    out, made = records.new_folder(cfg['out'], 'runs', f"tokenizer-{cfg['vocab_size']}", provenance.now())
    with records.owned(out, made=made):
        tok, train_s = train(parts[0], cfg['vocab_size'], cfg['split_pattern'], text)
        rec = record(tok, parts, train_s, cfg, data.sha256_of(cfg['data']))
        for i in range(min(10, len(tok.merges))):
            print(f"merge {i + 1:2d}: {in_words(tok, i)}")
        for name in ('train', 'val'):
            tokens, size = rec[f"{name}_tokens"], rec[f"{name}_bytes"]
            print(f"{dict(train='training', val='validation')[name]} part: {size} bytes in {tokens} "
                  f"tokens, {size / tokens if tokens else 0:.2f} bytes a token")
        records.write_record(out, {'tokenizer.json': records.json_text(rec)})
    print(f"tokenizer: {os.path.relpath(os.path.join(out, 'tokenizer.json'))}")
