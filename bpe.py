"""
bpe.py: a byte-level BPE tokenizer, from scratch: training, encoding and decoding.

Part I is the math, in the order of Karpathy's minbpe lecture: text to bytes, counting
pairs, one merge, the training loop, encoding by merge rank, decoding. Standard library
and `regex` (the split patterns' \\p{L} and possessive quantifiers, as tiktoken's). It trains
rustbpe's merges, in its order: the most frequent pair first, a tie to the smaller pair of
ids; and encodes as tiktoken does with the same ranks.

Part II is the speed, in numba, the same merges and ids as Part I (the tests hold them
equal): the patterns as a hand-written matcher over code points, each distinct chunk counted
once, training that updates only the pairs a merge touched (rustbpe's way), and encoding
each distinct chunk once. data.py's BPETokenizer is what the lab uses of it.
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


# ---------------------------------------------------------------------------
# Part II: the speed
#
# Part I counts every pair of every chunk again for each merge. Part II counts them once,
# then after each merge changes only the counts of the pairs the merge touched, in the
# chunks where it stood (rustbpe's way): each pair keeps a list of the chunks it was made
# in, and the most frequent pair comes off a heap, its count checked against the table's
# (a count that fell since it was pushed is pushed again). Same merges, same order.
import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import types  # noqa: E402
from numba.typed import Dict  # noqa: E402


# Cutting a text into chunks, fast: GPT-4's and GPT-2's patterns as a hand-written matcher
# over the text's code points, each alternative in the pattern's order (the first that
# matches wins, as a regular expression's alternation), their classes (\p{L}, \p{N}, \s)
# read from the `regex` module itself for each distinct character of the text.
LETTER, NUMBER, SPACE, NEWLINE, BLANK, QUOTE = 1, 2, 4, 8, 16, 32  # \p{L} \p{N} \s [\r\n] ' ' '
CONTRACTED = 'sdmtlvre'  # the letters after a quote: 's, 'd, 'm, 't, 'll, 've, 're


def classes(text, name):
    """(code points, flags, letters) of text: each character's classes, and which letter of
    CONTRACTED it is (1 + its index; 0: none), case-folded for gpt4's (?i:...)."""
    cp = np.frombuffer(text.encode('ascii'), np.uint8) if text.isascii() else \
        np.frombuffer(text.encode('utf-32-le'), np.uint32)  # (a byte a character where it can)
    size = 128 if text.isascii() else 0x110000
    chars = np.flatnonzero(_seen(cp, np.zeros(size, np.bool_)))
    flags, letters = np.zeros(size, np.uint8), np.zeros(size, np.uint8)
    for c in chars.tolist():
        ch = chr(c)
        flags[c] = (LETTER * bool(regex.match(r'\p{L}', ch)) + NUMBER * bool(regex.match(r'\p{N}', ch))
                    + SPACE * bool(regex.match(r'\s', ch)) + NEWLINE * (ch in '\r\n')
                    + BLANK * (ch == ' ') + QUOTE * (ch == "'"))
        folded = (f'(?i:{x})' if name == 'gpt4' else x for x in CONTRACTED)
        letters[c] = next((i + 1 for i, x in enumerate(folded) if regex.fullmatch(x, ch)), 0)
    return cp, flags[cp], letters[cp]


@numba.njit(cache=True)
def _seen(cp, seen):
    for c in cp:
        seen[c] = True
    return seen


@numba.njit(cache=True)
def _run(f, i, n, cls):
    """The end of the run of characters of class cls from i."""
    while i < n and f[i] & cls:
        i += 1
    return i


@numba.njit(cache=True)
def _other_run(f, i, n):
    """The end of the run of characters that are none of \\s, \\p{L}, \\p{N}, from i."""
    while i < n and not f[i] & (SPACE | LETTER | NUMBER):
        i += 1
    return i


@numba.njit(cache=True)
def _chunk_end(f, letter, i, n, gpt4):
    """Where the chunk that starts at i ends, by GPT-4's pattern (gpt4) or GPT-2's."""
    if f[i] & QUOTE and i + 1 < n:                       # '(?i:[sdmt]|ll|ve|re)
        c, d = letter[i + 1], letter[i + 2] if i + 2 < n else 0
        if 1 <= c <= 4:
            return i + 2
        if (c == 5 and d == 5) or (c in (6, 7) and d == 8):  # ll, ve, re
            return i + 3
    if gpt4:
        j = i + 1 if not f[i] & (NEWLINE | LETTER | NUMBER) else i
        if j < n and f[j] & LETTER:                       # [^\r\n\p{L}\p{N}]?+\p{L}+
            return _run(f, j, n, LETTER)
        if f[i] & NUMBER:                                 # \p{N}{1,3}
            return min(_run(f, i, n, NUMBER), i + 3)
        j = i + 1 if f[i] & BLANK else i
        if j < n and not f[j] & (SPACE | LETTER | NUMBER):  # ?[^\s\p{L}\p{N}]++[\r\n]*
            return _run(f, _other_run(f, j, n), n, NEWLINE)
    else:
        j = i + 1 if f[i] & BLANK else i
        if j < n and f[j] & LETTER:                       # ?\p{L}+
            return _run(f, j, n, LETTER)
        if j < n and f[j] & NUMBER:                       # ?\p{N}+
            return _run(f, j, n, NUMBER)
        if j < n and not f[j] & (SPACE | LETTER | NUMBER):  # ?[^\s\p{L}\p{N}]+
            return _other_run(f, j, n)
    end = _run(f, i, n, SPACE)                            # whitespace: i < end
    if gpt4:
        for k in range(end - 1, i - 1, -1):               # \s*[\r\n]: to its last newline
            if f[k] & NEWLINE:
                return k + 1
    if end == n or end - i == 1:                          # \s+(?!\S), else \s+
        return end
    return end - 1


def distinct_chunks(texts, name, order=False):
    """The chunks of texts by PATTERNS[name], each distinct one once: (ids, starts, lengths,
    counts, order, ends): chunk u's UTF-8 bytes are ids[starts[u]:starts[u] + lengths[u]], it
    stands counts[u] times, and (if order) the texts' chunks in order are order's, text t's
    ending before order[ends[t]]."""
    text = ''.join(texts)
    cp, f, letter = classes(text, name)
    text_ends = np.cumsum([len(t) for t in texts], dtype=np.int64)
    return _distinct(cp, f, letter, dict(gpt4=1, gpt2=0, none=-1)[name], text_ends, order)


@numba.njit(cache=True)
def _distinct(cp, f, letter, pattern, text_ends, want_order):
    """distinct_chunks' work: the chunks, each where _chunk_end says (pattern 1: GPT-4's, 0:
    GPT-2's, -1: none, a text one chunk), none across two texts (each ends at text_ends)."""
    table = np.full(1 << 12, -1, np.int64)  # open addressing on a chunk's hash: its u, or -1
    first, size, counts = np.zeros(1024, np.int64), np.zeros(1024, np.int64), np.zeros(1024, np.int64)
    hashes = np.zeros(1024, np.uint64)
    order = np.zeros(len(cp) if want_order else 0, np.int32)  # (u of each chunk, at most one a character)
    ends = np.zeros(len(text_ends), np.int64)
    n_distinct, n_chunks, start = 0, 0, 0
    for t, e in enumerate(text_ends):
        while start < e:
            end = _chunk_end(f, letter, start, e, pattern == 1) if pattern >= 0 else e
            h = np.uint64(14695981039346656037)          # FNV-1a over the code points
            for i in range(start, end):
                h = (h ^ np.uint64(cp[i])) * np.uint64(1099511628211)
            slot = np.int64(h & np.uint64(len(table) - 1))
            while True:                                  # another chunk in its slot: probe on
                u = table[slot]
                if u < 0:
                    u, n_distinct = n_distinct, n_distinct + 1
                    if u == len(first):
                        first, size, counts = _grow(first, u), _grow(size, u), _grow(counts, u)
                        hashes = _grow(hashes, u)
                    first[u], size[u], counts[u], hashes[u], table[slot] = start, end - start, 0, h, u
                    if 2 * n_distinct > len(table):      # at most half full
                        table = _rehash(hashes, n_distinct, 2 * len(table))
                    break
                if hashes[u] == h and _same(cp, first[u], start, end - start):
                    break
                slot = (slot + 1) & (len(table) - 1)
            counts[u] += 1
            if want_order:
                order[n_chunks] = u
            n_chunks += 1
            start = end
        ends[t] = n_chunks
    lengths = np.zeros(n_distinct, np.int64)             # their UTF-8 bytes
    for u in range(n_distinct):
        for i in range(first[u], first[u] + size[u]):
            lengths[u] += 1 + (cp[i] >= 0x80) + (cp[i] >= 0x800) + (cp[i] >= 0x10000)
    starts = np.zeros(n_distinct + 1, np.int64)
    starts[1:] = np.cumsum(lengths)
    ids = np.zeros(starts[-1], np.int64)
    for u in range(n_distinct):
        k = starts[u]
        for i in range(first[u], first[u] + size[u]):
            c = np.int64(cp[i])
            if c < 0x80:
                ids[k] = c
            elif c < 0x800:
                ids[k], ids[k + 1] = 0xC0 | c >> 6, 0x80 | c & 0x3F
            elif c < 0x10000:
                ids[k], ids[k + 1], ids[k + 2] = 0xE0 | c >> 12, 0x80 | c >> 6 & 0x3F, 0x80 | c & 0x3F
            else:
                ids[k], ids[k + 1] = 0xF0 | c >> 18, 0x80 | c >> 12 & 0x3F
                ids[k + 2], ids[k + 3] = 0x80 | c >> 6 & 0x3F, 0x80 | c & 0x3F
            k += 1 + (c >= 0x80) + (c >= 0x800) + (c >= 0x10000)
    return ids, starts, lengths, counts[:n_distinct], order[:n_chunks], ends


def train_fast(texts, n_merges, name='gpt4'):
    """train()'s merges, fast, by PATTERNS[name]: a list of (a, b)."""
    ids, starts, lengths, counts, _, _ = distinct_chunks(texts, name)
    return [(int(a), int(b)) for a, b in _train(ids, starts, lengths, counts, n_merges)]


@numba.njit(cache=True)
def _same(cp, a, b, n):
    """Whether the n code points at a and at b are the same."""
    for i in range(n):
        if cp[a + i] != cp[b + i]:
            return False
    return True


@numba.njit(cache=True)
def _rehash(hashes, n, size):
    """A table of `size` slots (a power of two) holding u = 0..n-1 by their hashes."""
    table = np.full(size, -1, np.int64)
    for u in range(n):
        slot = np.int64(hashes[u] & np.uint64(size - 1))
        while table[slot] >= 0:
            slot = (slot + 1) & (size - 1)
        table[slot] = u
    return table


@numba.njit(cache=True)
def _grow(a, n):
    """a, or a copy twice as long, so that index n fits."""
    if n < len(a):
        return a
    out = np.empty(max(2 * len(a), n + 1), a.dtype)
    out[:len(a)] = a
    return out


@numba.njit(cache=True)
def _get(d, key, default):
    return d[key] if key in d else default


@numba.njit(cache=True)
def _before(hc, ha, hb, i, j):
    """Whether heap entry i comes off before entry j: more frequent, or as frequent and the
    smaller pair (rustbpe's MergeJob order)."""
    if hc[i] != hc[j]:
        return hc[i] > hc[j]
    return ha[i] < ha[j] or (ha[i] == ha[j] and hb[i] < hb[j])


@numba.njit(cache=True)
def _swap(hc, ha, hb, i, j):
    hc[i], hc[j] = hc[j], hc[i]
    ha[i], ha[j] = ha[j], ha[i]
    hb[i], hb[j] = hb[j], hb[i]


@numba.njit(cache=True)
def _push(hc, ha, hb, n, c, a, b):
    """Push (count c, pair (a, b)) on the heap of n entries (its arrays have room for it)."""
    hc[n], ha[n], hb[n] = c, a, b
    i = n
    while i > 0 and _before(hc, ha, hb, i, (i - 1) // 2):
        _swap(hc, ha, hb, i, (i - 1) // 2)
        i = (i - 1) // 2


@numba.njit(cache=True)
def _pop(hc, ha, hb, n):
    """Take the top of the heap of n entries to position n - 1 (the caller reads it there)."""
    _swap(hc, ha, hb, 0, n - 1)
    i, n = 0, n - 1
    while True:
        top, left, right = i, 2 * i + 1, 2 * i + 2
        if left < n and _before(hc, ha, hb, left, top):
            top = left
        if right < n and _before(hc, ha, hb, right, top):
            top = right
        if top == i:
            return
        _swap(hc, ha, hb, i, top)
        i = top


@numba.njit(cache=True)
def _train(ids, starts, lengths, wcount, n_merges):
    """The merges, [n, 2]: ids holds every distinct chunk's bytes, chunk w at starts[w] for
    lengths[w] ids (merged in place), standing wcount[w] times in the texts."""
    count = Dict.empty(key_type=types.int64, value_type=types.int64)  # a pair (a << 32 | b): how often
    head = Dict.empty(key_type=types.int64, value_type=types.int64)   # its chunks' list: the newest node
    # the lists' nodes: a chunk, the node after. One a pair of neighbours at first, at most two
    # more a merged pair: fewer than 3 an id in all
    node_word = np.zeros(3 * len(ids) + 1, np.int32)
    node_next = np.zeros(3 * len(ids) + 1, np.int32)
    n_nodes = 0
    for w in range(len(lengths)):          # the first counts, and where each pair stands
        for i in range(starts[w], starts[w] + lengths[w] - 1):
            key = ids[i] << 32 | ids[i + 1]
            count[key] = _get(count, key, 0) + wcount[w]
            h = _get(head, key, -1)
            if h < 0 or node_word[h] != w:
                node_word[n_nodes], node_next[n_nodes] = w, h
                head[key] = n_nodes
                n_nodes += 1
    hc, ha, hb = np.zeros(len(count) + 1, np.int64), np.zeros(len(count) + 1, np.int64), np.zeros(len(count) + 1, np.int64)
    n_heap = 0
    for key, c in count.items():
        _push(hc, ha, hb, n_heap, c, key >> 32, key & 0xFFFFFFFF)
        n_heap += 1
    merges = np.zeros((n_merges, 2), np.int64)
    done = np.full(len(lengths), -1, np.int64)  # the last merge done in each chunk
    made = np.zeros(16, np.int64)               # the pairs a merge made, to push
    n_merged = 0
    while n_merged < n_merges and n_heap > 0:
        _pop(hc, ha, hb, n_heap)
        n_heap -= 1
        c, a, b = hc[n_heap], ha[n_heap], hb[n_heap]
        key = a << 32 | b
        now = _get(count, key, 0)
        if now <= 0:
            continue                            # gone: merged, or its chunks changed
        if now != c:                            # it fell since it was pushed: back in line
            _push(hc, ha, hb, n_heap, now, a, b)  # (in the place its pop left)
            n_heap += 1
            continue
        new = 256 + n_merged
        merges[n_merged, 0], merges[n_merged, 1] = a, b
        n_made = 0
        node = head[key]
        while node >= 0:
            w, node = node_word[node], node_next[node]
            if done[w] == n_merged:
                continue
            done[w] = n_merged
            n, k, start, end = wcount[w], starts[w], starts[w], starts[w] + lengths[w]
            i = start
            while i < end:                      # merge in place: k writes, i reads
                if i + 1 < end and ids[i] == a and ids[i + 1] == b:
                    count[key] -= n
                    for side in range(2):       # (x, a) becomes (x, new); (b, y) (new, y)
                        if side == 0 and k > start:
                            gone, pair = ids[k - 1] << 32 | a, ids[k - 1] << 32 | new
                        elif side == 1 and i + 2 < end:
                            gone, pair = b << 32 | ids[i + 2], new << 32 | ids[i + 2]
                        else:
                            continue
                        count[gone] -= n
                        count[pair] = _get(count, pair, 0) + n
                        h = _get(head, pair, -1)
                        if h < 0:               # a pair this merge made: pushed after it
                            made = _grow(made, n_made)
                            made[n_made] = pair
                            n_made += 1
                        if h < 0 or node_word[h] != w:
                            node_word[n_nodes], node_next[n_nodes] = w, h
                            head[pair] = n_nodes
                            n_nodes += 1
                    ids[k] = new
                    i += 2
                else:
                    ids[k] = ids[i]
                    i += 1
                k += 1
            lengths[w] = k - start
        for j in range(n_made):
            c = count[made[j]]
            if c > 0:
                if n_heap == len(hc):
                    hc, ha, hb = _grow(hc, n_heap), _grow(ha, n_heap), _grow(hb, n_heap)
                _push(hc, ha, hb, n_heap, c, made[j] >> 32, made[j] & 0xFFFFFFFF)
                n_heap += 1
        n_merged += 1
    return merges[:n_merged]


def encode_fast(text, merges, name='gpt4'):
    """encode()'s ids, fast, as an int64 array: each distinct chunk encoded once."""
    return encode_many([text], merges, name)[0]


def encode_many(texts, merges, name='gpt4'):
    """encode_fast of each of texts, in one pass: each distinct chunk of them all encoded once."""
    ids, starts, lengths, _, order, ends = distinct_chunks(texts, name, order=True)
    _encode_chunks(ids, starts, lengths, np.array(merges, dtype=np.int64).reshape(-1, 2))
    n = lengths[order]                       # each chunk's tokens, in the texts' order
    take = np.repeat(starts[order] - (np.cumsum(n) - n), n) + np.arange(n.sum())
    return np.split(ids[take], np.concatenate([[0], np.cumsum(n)])[ends[:-1]])


@numba.njit(cache=True)
def _encode_chunks(ids, starts, lengths, pairs):
    """Merge each chunk's ids in place, as encode() does: the pair of lowest rank first."""
    rank = Dict.empty(key_type=types.int64, value_type=types.int64)
    for r in range(len(pairs)):
        rank[pairs[r, 0] << 32 | pairs[r, 1]] = r
    for w in range(len(lengths)):
        s, n = starts[w], lengths[w]
        while n >= 2:
            best, at = len(pairs), -1
            for i in range(s, s + n - 1):
                r = _get(rank, ids[i] << 32 | ids[i + 1], len(pairs))
                if r < best:
                    best, at = r, i
            if at < 0:
                break
            ids[at] = 256 + best              # the leftmost of the lowest rank, as rustbpe
            ids[at + 1:s + n - 1] = ids[at + 2:s + n]
            n -= 1
        lengths[w] = n
