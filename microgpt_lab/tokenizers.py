"""
tokenizers.py: a run's tokenizer, and the `tokenizer` command.

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

import data
from microgpt_lab import UserError, provenance, records


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
    tok, rec = load(cfg['tokenizer'])
    check_fits(rec, cfg, sha256, cfg['tokenizer'])
    return tok, rec


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
