import sys
from pathlib import Path

import pytest
from hypothesis import settings

# numba compiles a kernel on its first call, so no per-example deadline; 25 examples a
# property keep the whole suite within a few minutes on 2 cores.
settings.register_profile('project', max_examples=25, deadline=None)
settings.load_profile('project')

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the modules are flat files at the top level

NAMES = ROOT.parent / 'shared' / 'data' / 'names.txt'


@pytest.fixture(scope='session')
def names_path():
    """The reference data set, from ../shared/data; absent on a user's clone."""
    if not NAMES.exists():
        pytest.skip(f"reference data set not found at {NAMES} (only the team's checkout has it)")
    return NAMES


@pytest.fixture(scope='session')
def reference_scalar_run(names_path):
    """The reference run in scalar mode (seed 42, 1000 steps on names.txt), made once for the
    session: its 1000 losses and its first three samples."""
    import random
    import data
    import microgpt
    docs = data.read_docs(names_path)
    tok = data.Tokenizer.from_docs(docs)
    rng = random.Random(42)
    train_docs, _ = data.split_docs(docs, rng, 0.1)
    model = microgpt.GPT(tok.vocab_size, rng)
    losses = [loss for _, loss, _ in microgpt.train(model, [tok.frame(d, 16) for d in train_docs], 1000)]
    samples = [tok.decode(model.sample(rng, tok.bos, 0.5)) for _ in range(3)]
    return dict(losses=losses, samples=samples)
