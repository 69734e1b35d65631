"""Drafters: what proposes the target's next tokens. All go through `base.evaluate`."""
from .base import DrafterEval, RawDraft, evaluate  # noqa: F401
from .cross_modal import CrossModalConfig, CrossModalDrafter  # noqa: F401
from .ngram import NgramPrior  # noqa: F401
from .seed_adapter import AdapterConfig, SeedAdapterDrafter  # noqa: F401
from .training import History, TrainConfig  # noqa: F401
