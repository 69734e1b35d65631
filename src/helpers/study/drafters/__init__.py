"""Drafters: what proposes the target's next tokens. All go through `base.evaluate`."""
from helpers.study.drafters.base import DrafterEval, RawDraft, evaluate  # noqa: F401
from helpers.study.drafters.cross_modal import CrossModalConfig, CrossModalDrafter  # noqa: F401
from helpers.study.drafters.ngram import NgramPrior  # noqa: F401
from helpers.study.drafters.seed_adapter import AdapterConfig, SeedAdapterDrafter  # noqa: F401
from helpers.training import History, TrainConfig  # noqa: F401
