"""The two models' prompt templates and placeholder tokens (background.md, eventgpt_model.md)."""
from __future__ import annotations

DRAFT_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
)
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
# LLaMA's order for unk/bos/eos; pad and the two placeholders follow (Video-LLaVA appends them).
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, VIDEO_TOKEN]


def draft_prompt(question: str, n_images: int = 1) -> str:
    """EventGPT's vicuna-v1 template; `<image>` stands for `<event>`."""
    return f"{DRAFT_SYSTEM} USER: {IMAGE_TOKEN * n_images}\n{question} ASSISTANT:"


def target_prompt(question: str) -> str:
    """Video-LLaVA's template."""
    return f"USER: {VIDEO_TOKEN}\n{question} ASSISTANT:"
