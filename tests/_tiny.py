"""The benchmark's build hook with the shipped synthetic models in place of the 7B shapes (CPU tests)."""
import numpy as np

from helpers.models import bench, vlm
from helpers.models.shipped import SHIPPED_DIR
from helpers.models.tokenizer import load_tokenizer


def tiny_build(tok):
    """bench.run_7b's build hook with the shipped synthetic models in place of the 7B shapes."""
    from helpers.models.backend import hf_adapter

    def build(kind, device):
        model, _ = vlm.load_pretrained(SHIPPED_DIR / kind, kind)
        shape = (60, 80, 3) if kind == "draft" else (8, 60, 80, 3)
        inputs = lambda n, seed=0: [np.random.default_rng(seed + i).integers(0, 256, shape, dtype=np.uint8) for i in range(n)]
        return model, hf_adapter(model, tok), inputs
    return build


def run_7b_tiny(monkeypatch):
    """bench.run_7b end to end on the small models, without compiling (minutes on a CPU)."""
    from helpers.models.decoder import StaticDecoder
    monkeypatch.setattr(StaticDecoder, "compile", lambda self: self)   # compiling on a CPU takes minutes
    tok = load_tokenizer(SHIPPED_DIR / "tokenizer")
    return bench.run_7b(tok, device="cpu", batches=[1, 2], widths=[1, 3], max_new_tokens=6, repeats=1,
                        log=lambda m: None, build=tiny_build(tok))
