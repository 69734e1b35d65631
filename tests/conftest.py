import pytest

from helpers.paths import SHARED_DATA

DEV_PAIRS = SHARED_DATA / "dsec_1q" / "pairs_dev.json"
LLAMA_TOKENIZER = SHARED_DATA / "llama_tokenizer"


def require_shared(path):
    """Skip (with the reason shown by -ra) when ../shared/data is not beside the checkout."""
    if not path.exists():
        pytest.skip(f"shared data absent: {path} (tests on real recorded data need ../shared/data)")
    return path
