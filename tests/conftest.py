import pytest
import torch

from helpers.suite.paths import SHARED_DATA

DEV_PAIRS = SHARED_DATA / "dsec_1q" / "pairs_dev.json"
LLAMA_TOKENIZER = SHARED_DATA / "llama_tokenizer"


def require_shared(path):
    """Skip (with the reason shown by -ra) when ../shared/data is not beside the checkout."""
    if not path.exists():
        pytest.skip(f"shared data absent: {path} (tests on real recorded data need ../shared/data)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one thread is faster, and 2 threads collapse when another process is busy.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shipped_models():
    """(draft, target, tokenizer): the shipped synthetic VLMs, fp32 on the CPU."""
    from helpers.models import vlm
    from helpers.models.shipped import SHIPPED_DIR
    draft, tok = vlm.load_pretrained(SHIPPED_DIR / "draft", "draft")
    target, _ = vlm.load_pretrained(SHIPPED_DIR / "target", "target")
    return draft, target, tok
