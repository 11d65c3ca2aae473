# Issue 35 (work in progress): bpe.py against rustbpe (training) and tiktoken (encoding) on
# tinyshakespeare, taking turns, medians of 5. Run from the repository root with the test
# extra installed: PYTHONPATH=. python results/issue35-bpe-speed/measure.py
import time, statistics as st, bpe, data, rustbpe, tiktoken
text = open(data.SHAKESPEARE).read()
bpe.train_fast([text[:1000]], 5); bpe.encode_fast(text[:1000], [(32, 116)])  # compile
res = {}
for V in (512, 4096):
    ours, rust = [], []
    for _ in range(5):
        t0 = time.perf_counter(); m = bpe.train_fast([text], V - 256); ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); t = rustbpe.Tokenizer(); t.train_from_iterator([text], V); rust.append(time.perf_counter() - t0)
    print(f"train {V}: ours {st.median(ours):.3f} s, rustbpe {st.median(rust):.3f} s, ratio {st.median(rust)/st.median(ours):.2f}")
enc = tiktoken.Encoding('x', pat_str=bpe.PATTERNS['gpt4'], mergeable_ranks={t: i for i, t in enumerate(bpe.vocabulary(m))}, special_tokens={})
ours, tik = [], []
for _ in range(5):
    t0 = time.perf_counter(); bpe.encode_fast(text, m); ours.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); enc.encode_ordinary(text); tik.append(time.perf_counter() - t0)
print(f"encode 4096: ours {st.median(ours):.3f} s, tiktoken {st.median(tik):.3f} s, ours/tiktoken speed {st.median(tik)/st.median(ours):.2f}")
