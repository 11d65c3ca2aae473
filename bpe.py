"""
bpe.py: a byte-level BPE tokenizer, from scratch: training, encoding and decoding.

Part I is the math, in the order of Karpathy's minbpe lecture: text to bytes, counting
pairs, one merge, the training loop, encoding by merge rank, decoding. Standard library
and `regex` (the split patterns' \\p{L} and possessive quantifiers, as tiktoken's). It trains
rustbpe's merges, in its order: the most frequent pair first, a tie to the smaller pair of
ids; and encodes as tiktoken does with the same ranks.
"""
from collections import Counter

import regex

# ---------------------------------------------------------------------------
# Part I: the math
#
# Text is first cut into chunks (words with their leading space, runs of digits,
# punctuation, whitespace) by a pattern, so that no token spans two of them: "dog." and
# "dog!" share the token " dog". GPT-2's and GPT-4's patterns are tiktoken's; none: the
# whole text is one chunk.
PATTERNS = dict(
    gpt4=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
    gpt2=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    none=None)


def chunks(text, pattern):
    """text cut into its chunks by pattern (a regular expression, or None: one chunk)."""
    if pattern is None:
        return [text] if text else []
    return regex.findall(pattern, text)


# Every chunk is a list of ids, its UTF-8 bytes at first (0..255). A merge replaces a pair
# of neighbouring ids, wherever it stands, with a new id: 256 for the first merge, 257 for
# the second, ... Training picks each merge as the pair that stands most often.
def pair_counts(ids, counts, times=1):
    """Add to counts {(a, b): n} the pairs of neighbours in ids, each `times` times."""
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + times
    return counts


def merge(ids, pair, new_id):
    """ids with each occurrence of pair, from the left, replaced by new_id:
    merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]; merge([5, 5, 5], (5, 5), 6) == [6, 5]."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train(texts, n_merges, pattern=PATTERNS['gpt4'], progress=None):
    """The merges [(a, b), ...] learnt from texts (each cut into chunks alone): merge i makes
    token 256 + i. Each is the pair of neighbours that stands most often in the chunks as
    the merges before it left them; of pairs that stand equally often, the smaller (a, b).
    Fewer than n_merges if the chunks run out of pairs. progress(merges), if given, is
    called after each merge."""
    words = Counter(chunk for text in texts for chunk in chunks(text, pattern))
    words = [(list(chunk.encode('utf-8')), n) for chunk, n in words.items()]  # each once, counted
    merges = []
    while len(merges) < n_merges:
        counts = {}
        for ids, n in words:
            pair_counts(ids, counts, n)
        if not counts:
            break                                     # every chunk is one token
        pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))  # a tie: the smaller pair
        words = [(merge(ids, pair, 256 + len(merges)), n) for ids, n in words]
        merges.append(pair)
        if progress:
            progress(merges)
    return merges


def encode(text, merges, pattern=PATTERNS['gpt4']):
    """text's ids: each chunk's bytes, merged as training merged them: the pair learnt first
    (its rank, the merge's index) before any learnt later, until none of its pairs is a merge."""
    rank = {pair: i for i, pair in enumerate(merges)}
    out = []
    for chunk in chunks(text, pattern):
        ids = list(chunk.encode('utf-8'))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, len(merges)))
            if pair not in rank:
                break
            ids = merge(ids, pair, 256 + rank[pair])
        out += ids
    return out


def vocabulary(merges):
    """Each token's bytes: [bytes] of 256 + len(merges) tokens."""
    vocab = [bytes([b]) for b in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab


def decode(ids, vocab):
    """The text of ids: their bytes joined, read as UTF-8; bytes that are not (a token
    sequence cut inside a character) read as U+FFFD, never an error."""
    return b''.join(vocab[i] for i in ids).decode('utf-8', errors='replace')
