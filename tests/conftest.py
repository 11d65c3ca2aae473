import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the modules are flat files at the top level

NAMES = ROOT.parent / 'shared' / 'data' / 'names.txt'


@pytest.fixture
def names_path():
    """The reference data set, from ../shared/data; absent on a user's clone."""
    if not NAMES.exists():
        pytest.skip(f"reference data set not found at {NAMES} (only the team's checkout has it)")
    return NAMES
