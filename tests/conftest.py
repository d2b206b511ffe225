import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

# TRILLION_COMPILE=auto would make the engine's default compile its decode step in a background
# thread; the suite runs eagerly unless a test asks for compilation (test_compile_default.py sets it).
os.environ.setdefault("TRILLION_COMPILE", "0")
