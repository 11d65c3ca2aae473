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


@pytest.fixture
def names_path():
    """The reference data set, from ../shared/data; absent on a user's clone."""
    if not NAMES.exists():
        pytest.skip(f"reference data set not found at {NAMES} (only the team's checkout has it)")
    return NAMES
