"""bpe.py against its oracles: rustbpe's merges (what nanochat trains its tokenizer with) and
tiktoken's encoding with the same ranks, both from the test extra, never run-time
dependencies; and its own round trip, for any string."""
import pytest
import rustbpe
import tiktoken
from hypothesis import given, strategies as st

import bpe
import data

MULTI_BYTE = "Ça déjà vu, naïve café. 東京は今日も晴れ。🙂🙂 👩‍👩‍👧 Привет, мир! 1234567 it's we're\r\n\n  x"
TEXTS = dict(
    ascii=["The quick brown fox jumps over the lazy dog. " * 3 + "It's 2026, isn't it?  \n\nYes!"],
    multi_byte=[MULTI_BYTE * 2],
    empty=[''],
    names=open(data.NAMES).read().splitlines()[:2000],  # a document a text, as `lines` trains
    shakespeare=[open(data.SHAKESPEARE).read()[:30000]])


def rustbpe_tokens(texts, n_merges, pattern):
    """rustbpe trained alike: (each merge's token, its bytes, in rustbpe's order; rustbpe). Its
    Python side gives a token's bytes, not the pair that made it ('ana': 'an'+'a' or 'a'+'na');
    the bytes of every token in order hold the pairs to rustbpe's (a pair chosen otherwise
    would count its neighbours otherwise from then on)."""
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(texts, 256 + n_merges, pattern=pattern)
    return [token for token, _ in sorted(tok.get_mergeable_ranks(), key=lambda r: r[1])][256:], tok


def tiktoken_of(merges, pattern):
    vocab = bpe.vocabulary(merges)
    return tiktoken.Encoding('bpe', pat_str=pattern, special_tokens={},
                             mergeable_ranks={token: i for i, token in enumerate(vocab)})


@pytest.mark.parametrize('split', ['gpt4', 'gpt2'])
@pytest.mark.parametrize('name', TEXTS)
def test_the_merges_are_rustbpes_and_encoding_is_tiktokens(name, split):
    texts, pattern = TEXTS[name], bpe.PATTERNS[split]
    n_merges = 60 if name == 'shakespeare' else 30
    merges = bpe.train(texts, n_merges, pattern)
    expected, rust = rustbpe_tokens(texts, n_merges, pattern)
    assert bpe.vocabulary(merges)[256:] == expected and len(merges) == min(n_merges, len(expected))
    sample = '\n'.join(texts)[:3000] + MULTI_BYTE
    assert bpe.encode(sample, merges, pattern) == tiktoken_of(merges, pattern).encode_ordinary(sample) \
        == rust.encode(sample)


def test_minbpes_wikipedia_example_takes_the_smaller_pair_on_a_tie():
    """aaabdaaabac: 'aa' stands 4 times: 256. Then 'ab' (97, 98) and 'aa'+'a' (256, 97) stand
    twice each: the tie goes to the smaller pair, 'ab', as rustbpe's MergeJob orders them,
    and then 'aa'+'ab': Wikipedia's Z, Y, X. minbpe's max() takes the pair it counted first,
    (256, 97), 'aaa', then 'aaa'+'b': other tokens, the same ids for this text."""
    merges = bpe.train(['aaabdaaabac'], 3)
    assert merges == [(97, 97), (97, 98), (256, 257)]
    assert bpe.encode('aaabdaaabac', merges) == [258, 100, 258, 97, 99]  # XdXac
    assert bpe.vocabulary(merges)[256:] == rustbpe_tokens(['aaabdaaabac'], 3, bpe.PATTERNS['gpt4'])[0]
    ids, minbpes = list(b'aaabdaaabac'), []  # minbpe's BasicTokenizer.train, its tie rule
    for i in range(3):
        stats = bpe.pair_counts(ids, {})
        pair = max(stats, key=stats.get)
        ids = bpe.merge(ids, pair, 256 + i)
        minbpes.append(pair)
    assert minbpes == [(97, 97), (256, 97), (257, 98)] and ids == [258, 100, 258, 97, 99]


def test_training_stops_where_the_text_runs_out_of_pairs():
    assert bpe.train(['abab'], 10) == [(97, 98), (256, 256)]
    assert bpe.train([''], 5) == [] and bpe.train(['a b'], 5, bpe.PATTERNS['gpt4']) == [(32, 98)]


@given(st.text())
def test_decoding_an_encoding_gives_the_text_back(s):
    merges = bpe.train([MULTI_BYTE, s], 40)
    vocab = bpe.vocabulary(merges)
    assert bpe.decode(bpe.encode(s, merges), vocab) == s
    assert bpe.decode(bpe.encode(s, merges, None), vocab) == s


def test_a_token_sequence_cut_inside_a_character_decodes_with_a_replacement_character():
    vocab = bpe.vocabulary([])
    ids = bpe.encode('é🙂', [])  # bytes: c3 a9 f0 9f 99 82
    assert bpe.decode(ids[:-1], vocab) == 'é\ufffd' and bpe.decode(ids[1:2], vocab) == '\ufffd'


@pytest.mark.parametrize('split', ['gpt4', 'gpt2', 'none'])
@pytest.mark.parametrize('name', TEXTS)
def test_the_fast_training_merges_as_the_readable_one(name, split):
    n_merges = 60 if name == 'shakespeare' else 30
    texts = TEXTS[name][:300] if split == 'none' else TEXTS[name]  # (Part I: slow on one chunk)
    assert bpe.train_fast(texts, n_merges, split) == bpe.train(texts, n_merges, bpe.PATTERNS[split])


def test_the_fast_training_gives_rustbpes_4096_tokens_on_all_of_shakespeare():
    text = open(data.SHAKESPEARE).read()
    expected, _ = rustbpe_tokens([text], 3840, bpe.PATTERNS['gpt4'])
    assert bpe.vocabulary(bpe.train_fast([text], 3840))[256:] == expected


@pytest.mark.parametrize('name', TEXTS)
def test_the_fast_encoding_encodes_as_the_readable_one(name):
    merges = bpe.train_fast(TEXTS[name], 40)
    sample = '\n'.join(TEXTS[name])[:5000] + MULTI_BYTE
    assert bpe.encode_fast(sample, merges).tolist() == bpe.encode(sample, merges)
    texts = ['', *TEXTS[name][:50], '', MULTI_BYTE]  # many at once: each its own, empty ones too
    assert [ids.tolist() for ids in bpe.encode_many(texts, merges)] == \
        [bpe.encode(text, merges) for text in texts]


TRICKY = "'s'S'ſ'll'LL'Ve're'x '  \r\n\n \t\n\u00a0 y\u2028z \u3000 12345 x1 (hi) ..\n\n  \n"


@pytest.mark.parametrize('split', ['gpt4', 'gpt2'])
@given(st.text(alphabet=st.sampled_from(list(TRICKY + MULTI_BYTE + 'abc019'))) | st.text())
def test_the_fast_chunks_are_the_patterns_own(split, s):
    """GPT-4's and GPT-2's patterns, written out by hand over code points, cut as `regex` cuts."""
    ids, starts, lengths, counts, order, _ = bpe.distinct_chunks([s, TRICKY], split, order=True)
    distinct = [bytes(ids[starts[u]:starts[u] + lengths[u]].tolist()).decode() for u in range(len(lengths))]
    expected = bpe.chunks(s, bpe.PATTERNS[split]) + bpe.chunks(TRICKY, bpe.PATTERNS[split])
    assert [distinct[u] for u in order] == expected
    assert counts.tolist() == [expected.count(c) for c in distinct]


# ---------------------------------------------------------------------------
# data.py's BPE tokenizer, and its tokenizer.json
def test_a_bpe_tokenizer_frames_documents_with_bos_and_counts_their_bytes():
    merges = bpe.train_fast(TEXTS['names'], 40)
    tok = data.BPETokenizer(merges)
    assert (tok.bos, tok.vocab_size) == (296, 297)
    framed = tok.frame('émilie', 50)
    assert framed[0] == framed[-1] == tok.bos and tok.decode(framed) == 'émilie'
    assert tok.n_bytes(framed) == len('émilie'.encode()) == 7
    assert tok.frame_many(['émilie', '', 'zoé'], 3) == [tok.frame(d, 3) for d in ('émilie', '', 'zoé')]


def test_the_split_patterns_named_without_loading_bpe_are_bpes():
    assert data.SPLIT_PATTERNS == tuple(bpe.PATTERNS)


def test_a_bpe_decoder_holds_a_cut_character_until_it_is_whole():
    tok = data.BPETokenizer([], bos=False)               # bytes alone: 'é' is two tokens
    ids = tok.encode('né')
    assert tok.decode(ids[:2]) == 'n\ufffd'                 # cut: U+FFFD, never a crash
    decode = tok.decoder()
    assert [decode(ids[:2]), decode(ids[2:])] == ['n', 'é']


def test_the_characters_bytes_are_counted_and_bos_is_none():
    tok = data.Tokenizer.from_docs(['né', 'a'])
    assert tok.n_bytes(tok.frame('né', 16)) == 3 and tok.n_bytes([tok.bos]) == 0


def record_of(tok, **changes):
    return dict(dict(tok.record(), train_tokens=1, val_tokens=1, train_bytes=1, val_bytes=1, train_s=0.1,
                     data='names.txt', data_sha256='0' * 64, data_format='lines', val_fraction=0.1,
                     seed=42), **changes)


@pytest.mark.parametrize('changes, field', [
    (dict(merges=[[97, 98], [300, 97]]), 'merges'), (dict(merges=[[97]]), 'merges'),
    (dict(split_pattern='gpt5'), 'split_pattern'), (dict(pattern='.'), 'pattern'),
    (dict(special={'<BOS>': 5}), 'special'), (dict(vocab_size=9), 'vocab_size'),
    (dict(train_tokens=-1), 'train_tokens'), (dict(val_bytes=1.5), 'val_bytes'),
    (dict(train_s='fast'), 'train_s'), (dict(data_sha256='abc'), 'data_sha256'),
    (dict(data_format='text'), 'data_format'), (dict(seed='42'), 'seed'), (dict(val_fraction=None), 'val_fraction'),
    (dict(data=5), 'data'),
])
def test_a_damaged_tokenizer_json_is_one_line_naming_its_field(changes, field):
    tok = data.BPETokenizer([(97, 98), (256, 99)])
    assert data.read_tokenizer('t.json', record_of(tok)).merges == tok.merges
    with pytest.raises(data.DataError, match=f"^t.json: {field} "):
        data.read_tokenizer('t.json', record_of(tok, **changes))
    record = record_of(tok)
    del record[field]
    with pytest.raises(data.DataError, match=f"^t.json: {field} is missing"):
        data.read_tokenizer('t.json', record)
