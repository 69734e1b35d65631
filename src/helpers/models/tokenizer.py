"""The models' tokenizers: one loader for every local tokenizer, and the world's BPE trainer.

`load_tokenizer` reads a checkpoint folder (tokenizer_config.json beside tokenizer.json: the
shipped world models, a real HF checkpoint) with AutoTokenizer, or a bare `tokenizer.json`
(file or folder, e.g. ../shared/data/llama_tokenizer) as a fast tokenizer with LLaMA's special
tokens, which is how EventGPT and Video-LLaVA use it. Never the hub.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from helpers.models.prompts import IMAGE_TOKEN, SPECIAL_TOKENS, VIDEO_TOKEN, draft_prompt, target_prompt
from helpers.suite.paths import resolve



def load_tokenizer(path: str | Path):
    """The tokenizer at `path` (relative paths from the repository root), offline."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = resolve(path)
    if path.is_dir() and (path / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"tokenizer not found: {path} (expected a checkpoint folder with "
                                f"tokenizer_config.json, or a tokenizer.json)")
    return PreTrainedTokenizerFast(tokenizer_file=str(file), bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def pieces(tokenizer, ids: Iterable[int]) -> list[str]:
    """Readable per-token pieces: each id decoded alone ('▁car' -> 'car', '<0x0A>' -> '\\n')."""
    return [tokenizer.decode([int(t)]) for t in ids]


def train_tokenizer(texts, vocab_size: int = 1024, min_frequency: int = 2):
    """Byte-level BPE trained on `texts` (captions, questions), wrapped as PreTrainedTokenizerFast.

    Byte-level so that no text is ever <unk>; with a few-hundred-word world most pieces end up
    whole words, as LLaMA's are for common English. The prompt templates are added to the corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    corpus = list(texts) + [draft_prompt("q") + " a", target_prompt("q") + " a"] * 4
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=[IMAGE_TOKEN, VIDEO_TOKEN],
    )
