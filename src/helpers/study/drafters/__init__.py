"""Drafters: what proposes the target's next tokens. All go through `base.evaluate`."""
from helpers.study.drafters.base import (FULL, DraftContext, Drafter, DrafterEval, RawDraft, Visibility,  # noqa: F401
                                         evaluate, stream_timing, with_visibility)
from helpers.study.drafters.cross_modal import CrossModalConfig, CrossModalDrafter  # noqa: F401
from helpers.study.drafters.ngram import NgramPrior  # noqa: F401
from helpers.study.drafters.seed_adapter import AdapterConfig, SeedAdapterDrafter  # noqa: F401
