"""cross_modal: a drafter that reads both the draft model's output and the target's prefix.

A small encoder-decoder Transformer: the encoder reads the draft model's generated ids, the
causal decoder reads the target's accepted prefix (token 0 from the target's prefill) and
cross-attends to the encoder, predicting the target's next token. Input and output share a
compact vocabulary built from the training split (ids never seen in training map to UNK and
can never be predicted). With `use_draft=False` the encoder sees only UNK: the same network
becomes a neural content-free prior, the ablation that isolates what the draft adds.

`set_prior(prior, weight)` mixes the network's next-token distribution with a content-free prior
of the target's phrasing: p = weight * p_net + (1 - weight) * p_prior, weight chosen on validation
(`choose_prior_weight`). With little data the count model knows the target's formulaic wording
better than a network can learn it, while the network brings the scene content from the draft.
The prior is an n-gram (`NgramPrior`) or any content-free count drafter of
helpers.study.drafters.lookup (`target_prior_question` included: it is bound to each pair's
question and shown no draft, `prior_distribution`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from helpers.study.drafters import graphs
from helpers.study.drafters.base import DraftContext, evaluate
from helpers.study.drafters.ngram import NgramPrior
from helpers.study.pairs import RecordedPair
from helpers.training import IGNORE, MISS, ModelDevice, TrainConfig, chunks, fit_token_model, pad_batch

PAD, UNK = 0, 1  # compact ids
PRIOR_TOP = 50   # a mixed-in prior contributes its best this many candidates, renormalised


def mixable(prior) -> bool:
    """Whether `prior` can be mixed into a network (`set_prior`): content-free, and an n-gram or a
    count drafter, whose next-token distribution `prior_distribution` reads."""
    return not getattr(prior, "reads_draft", False) and (hasattr(prior, "distribution") or hasattr(prior, "dist"))


def prior_distribution(prior, question: str, prefix: Sequence[int], k: int = PRIOR_TOP) -> dict[int, float]:
    """A content-free prior's next-token distribution after `prefix` for a pair asked `question`:
    an n-gram's own (`NgramPrior.distribution`), or a count drafter's (helpers.study.drafters.lookup)
    given the question and no draft token; its k best candidates, renormalised."""
    if hasattr(prior, "distribution"):
        return prior.distribution(prefix, k)
    top = prior.dist(prior.state_for("", question, ()), prefix).topk(k)
    z = sum(q for _, q in top) or 1.0
    return {t: q / z for t, q in top}


def load_prior(path: Path):
    """The prior saved next to a network: an n-gram or a count drafter, by what the file holds."""
    from helpers.study.drafters import lookup
    return lookup.load(path) if "class" in json.loads(path.read_text()) else NgramPrior.load(path)


@dataclass
class CrossModalConfig:
    d_model: int = 256
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    d_ffn: int = 1024
    dropout: float = 0.2      # small data: more than the seed's 0.1
    max_len: int = 128
    use_draft: bool = True    # False = ablation: decoder alone (content-free neural prior)


class EncoderDecoder(nn.Module):
    def __init__(self, cfg: CrossModalConfig, vocab: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab, cfg.d_model, padding_idx=PAD)
        # tied output layer: N(0, 1/d) keeps the initial logits O(1) (N(0, 1) starts the loss near 30)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.src_pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.tgt_pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.net = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.enc_layers, cfg.dec_layers, cfg.d_ffn,
                                  cfg.dropout, activation="gelu", batch_first=True)
        self.net.encoder.enable_nested_tensor = self.net.encoder.use_nested_tensor = False  # prototype path: only warns
        self.norm = nn.LayerNorm(cfg.d_model)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, S) source ids -> the encoder's memory (B, S, D) and its padding mask. A chain of
        drafts decodes several times against one draft: the memory is computed once (propose)."""
        s = self.embed(src) + self.src_pos(torch.arange(src.shape[1], device=src.device))
        pad = src == PAD
        return self.net.encoder(s, src_key_padding_mask=pad), pad

    def hidden(self, memory: torch.Tensor, pad: torch.Tensor | None, tgt: torch.Tensor) -> torch.Tensor:
        """The decoder's last states after its final norm (B, T, D): what the tied output reads."""
        T, dev = tgt.shape[1], tgt.device
        t = self.embed(tgt) + self.tgt_pos(torch.arange(T, device=dev))          # (B, T, D)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=dev)
        h = self.net.decoder(t, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=pad)
        return self.norm(h)

    def decode(self, memory: torch.Tensor, pad: torch.Tensor | None, tgt: torch.Tensor) -> torch.Tensor:
        return self.hidden(memory, pad, tgt) @ self.embed.weight.T               # tied output

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:  # (B, S), (B, T) -> (B, T, V)
        return self.decode(*self.encode(src), tgt)                                # what nn.Transformer does


class StaticChain:
    """An EncoderDecoder's drafting passes at one static shape (a source of `src`'s shape, the
    target prefix right-padded to max_len), each a `graphs.Replay`: `encode(src)` once per chain,
    then either `step(prefix)` -> the probabilities (V,) after the prefix's last token (PAD and UNK
    at 0), or `greedy(prefix, n)` -> n argmax tokens, each pass writing its token into the prefix
    buffer on the device (one host sync per chain, as in a compiled 7B decode loop), or
    `mixed(prefix, n, row_of, weight)` -> n tokens of the network mixed with a prior computed on the
    host, the network's next pass overlapping the prior's work. Causal self-attention and the
    source's padding mask keep the padding out of the real positions' outputs."""

    def __init__(self, model: EncoderDecoder, src: torch.Tensor, max_len: int, graph: bool = True):
        self.max_len, self.device = max_len, src.device
        self.encoder = graphs.Replay(model.encode, [src], graph)
        memory, pad = model.encode(src)                                   # example shapes for the steps
        self.has_pad = pad is not None
        # the prefix buffer has one slot beyond the network's positions: a chain's last token may land there
        tgt = torch.full((1, max_len + 1), PAD, dtype=torch.long, device=src.device)
        examples = [memory, tgt, torch.zeros(1, dtype=torch.long, device=src.device)] + ([pad] if self.has_pad else [])

        def step(memory, tgt, last, *pad):
            logits = model.decode(memory, pad[0] if pad else None, tgt[:, :max_len])[0].index_select(0, last)[0]
            logits[:2] = -torch.inf                                       # PAD/UNK are never drafts
            return logits

        def greedy(memory, tgt, last, *pad):                              # writes its token after the prefix
            nxt = step(memory, tgt, last, *pad).argmax().view(1)
            tgt[0].index_copy_(0, last + 1, nxt)
            last.add_(1)
            return nxt

        def probs(memory, tgt, last, *pad):
            return step(memory, tgt, last, *pad).softmax(-1)
        self.greedier = graphs.Replay(greedy, examples, graph)
        self.prober = graphs.Replay(probs, examples, graph)
        if self.prober.outputs is None:           # not captured: its outputs exist after a first (eager) call
            self.prober()
        tgt_s, last_s = self.prober.inputs[1:3]   # the prober's prefix buffers, which the picker writes its token into

        def pick(row, weight):                    # weight x the prober's probabilities + a prior row: the argmax
            nxt = (self.prober.outputs * weight + row).argmax().view(1)
            tgt_s[0].index_copy_(0, last_s + 1, nxt)
            last_s.add_(1)
            return nxt
        # captured only over a captured prober: an eager prober's outputs are new tensors every call
        self.picker = graphs.Replay(pick, [torch.zeros_like(self.prober.outputs), torch.ones((), device=src.device)],
                                    graph and self.prober.graph is not None)
        self.graphed = all(r.graph is not None for r in (self.encoder, self.greedier, self.prober, self.picker))

    def encode(self, src: torch.Tensor) -> None:
        self.memory = self.encoder(src)

    def _inputs(self, prefix: Sequence[int]) -> list[torch.Tensor]:
        memory, pad = self.memory
        tgt = pad_batch([prefix], PAD, self.max_len + 1).to(self.device, non_blocking=True)
        last = torch.tensor([len(prefix) - 1]).to(self.device, non_blocking=True)
        return [memory, tgt, last] + ([pad] if self.has_pad else [])

    def step(self, prefix: Sequence[int]) -> torch.Tensor:
        """The network's next-token probabilities (V,) after `prefix` (PAD and UNK at 0)."""
        return self.prober(*self._inputs(prefix))

    def greedy(self, prefix: Sequence[int], n: int) -> list[int]:
        """n greedy tokens after `prefix` (n <= max_len - len(prefix) + 1); the first pass copies the
        inputs in, the others replay on what the previous pass left in the buffers."""
        if n < 1:
            return []
        self.greedier(*self._inputs(prefix))
        for _ in range(n - 1):
            self.greedier()
        written = self.greedier.inputs[1][0, len(prefix): len(prefix) + n - 1]   # all but the last token
        return written.tolist() + self.greedier.outputs.tolist()

    def mixed(self, prefix: Sequence[int], n: int, row_of: Callable[[list[int]], torch.Tensor], weight: float) -> list[int]:
        """n tokens after `prefix`, each the argmax of weight x the network's probabilities plus
        row_of(tokens drafted so far) (the prior's share, (V,) on the host, computed there). Two
        replays per token: the network's pass, then the mixing pass that writes the token after the
        prefix on the device. The network's pass for the next token is queued before the host waits
        for this token, so the host computes the prior's row while the GPU runs the network: a chain
        costs about n x max(network pass, prior row) plus the mixing passes and one sync per token."""
        drafted: list[int] = []
        if n < 1:
            return drafted
        w = torch.tensor(float(weight))
        self.prober(*self._inputs(prefix))
        on_gpu = self.picker.graph is not None
        host = torch.zeros(1, dtype=torch.long, pin_memory=on_gpu)
        done = torch.cuda.Event() if on_gpu else None
        for i in range(n):
            nxt = self.picker(row_of(drafted), w)
            if on_gpu:
                host.copy_(nxt, non_blocking=True)
                done.record()
            if i < n - 1:
                self.prober()                         # the next network pass, queued behind this token
            if on_gpu:
                done.synchronize()                    # waits for this token only, not for that pass
            drafted.append(int(host if on_gpu else nxt))
        return drafted


class CrossModalDrafter(ModelDevice):
    cuda_graphs = True      # on a CUDA device, draft chains replay CUDA graphs (StaticChain)

    def __init__(self, cfg: CrossModalConfig, device: str = "cpu", name: str | None = None):
        self.cfg, self.device = cfg, device
        self.name = name or ("cross_modal" if cfg.use_draft else "target_prior_neural")
        self.needs = ("every draft token that exists, and the target's accepted prefix" if cfg.use_draft
                      else "the target's accepted prefix only (the draft is hidden)")
        self.ranks = True
        self.reads_draft = cfg.use_draft       # the ablation sees only UNK where the draft would be
        self.prior, self.prior_weight = None, 1.0   # weight of the network when a prior is mixed in
        self._rows = (None, None)                   # (key, the prior's rows) of the last prefix (_prior_rows)

    def set_prior(self, prior, weight: float) -> None:
        """Mix `prior` (None: none) into the network's distribution with the network weighted `weight`."""
        if not 0 <= weight <= 1:
            raise ValueError(f"network weight must be in [0, 1], got {weight}")
        if prior is not None and not mixable(prior):
            raise ValueError(f"{prior.name} cannot be mixed in: only a content-free n-gram or count drafter can (one "
                             "that reads the draft would make the mixture's gain over the network not the network's alone)")
        self.prior, self.prior_weight = prior, float(weight)
        self._rows = (None, None)                   # a prior changed in place is set again: nothing stale kept

    # --- vocabulary ---------------------------------------------------------------
    def _build_vocab(self, train: Sequence[RecordedPair]) -> None:
        ids = sorted({t for p in train for t in (*p.draft_ids, *p.target_ids)})
        self.itos = [-1, -1] + ids                                   # compact -> global (-1: special)
        self.stoi = {t: i + 2 for i, t in enumerate(ids)}

    def _enc(self, ids, unk: int = UNK) -> list[int]:
        return [self.stoi.get(t, unk) for t in ids][: self.cfg.max_len]

    def _src(self, draft_ids: Sequence[int]) -> list[int]:
        return (self._enc(draft_ids) or [UNK]) if self.cfg.use_draft else [UNK]

    # --- training -----------------------------------------------------------------
    def _batches(self, pairs: Sequence[RecordedPair], shuffle: bool, rng) -> list:
        out = []
        for g in chunks(pairs, self.batch_size, shuffle, rng):
            src = pad_batch([self._src(p.draft_ids) for p in g], PAD)                        # (B, S)
            tgt = pad_batch([self._enc(p.target_ids[:-1]) for p in g], PAD)        # (B, T)
            y = pad_batch([self._enc(p.target_ids[1:], MISS) for p in g], IGNORE, tgt.shape[1])
            out.append(((src, tgt), y))
        return out

    def fit(self, train, val, tcfg: TrainConfig):
        self.batch_size = tcfg.batch_size
        self._build_vocab(train)
        torch.manual_seed(tcfg.seed)      # the initial weights depend on the seed alone, not on what ran before
        self.model = EncoderDecoder(self.cfg, len(self.itos)).to(self.device)
        return fit_token_model(self.model, self._batches, train, val, tcfg, desc=self.name)

    # --- inference ----------------------------------------------------------------
    def _probs(self, draft_ids: Sequence[int], prefix: Sequence[int], question: str = "") -> torch.Tensor:
        """Next-token probabilities after each prefix position, (len(prefix), V), the prior mixed in if set."""
        return self._probs_of(pad_batch([self._src(draft_ids)], PAD), prefix, question)

    @torch.no_grad()
    def _probs_of(self, src: torch.Tensor, prefix: Sequence[int], question: str) -> torch.Tensor:
        """_probs from the encoder's input (the draft's ids, or features), for a pair asked `question`."""
        self.model.eval()
        memory = self.model.encode(src.to(self.device))
        lg = self.model.decode(*memory, pad_batch([self._enc(prefix)], PAD).to(self.device))[0].cpu()
        lg[:, :2] = -torch.inf                                       # PAD/UNK are never drafts
        rows = self._prior_rows(prefix, len(lg), lg.shape[1], lg.dtype, question)
        return lg.softmax(-1) if rows is None else lg.softmax(-1) * self.prior_weight + rows

    def _prior_rows(self, prefix: Sequence[int], n: int, vocab: int, dtype, question: str = "") -> torch.Tensor | None:
        """(n, vocab): row r is (1 - network weight) x the prior's distribution after prefix[: r + 1],
        in compact ids (what `_mix` adds to one row), or None with no prior mixed in. The last
        prefix's rows are kept: the streamed views of one pair all decode the same target prefix, so
        the prior's Python runs once per pair, not once per view. A prior updated in place must be
        given again with `set_prior`, which forgets the kept rows."""
        if self.prior is None or self.prior_weight == 1.0:
            return None
        key = (id(self.prior), self.prior_weight, question, tuple(prefix[:n]), vocab, dtype)
        if self._rows[0] != key:
            self._rows = (key, torch.stack([self._prior_row(prefix[: r + 1], vocab, dtype, question) for r in range(n)])
                          if n else torch.zeros(0, vocab, dtype=dtype))
        return self._rows[1]

    def _prior_entries(self, prefix: Sequence[int], question: str = "", k: int = PRIOR_TOP) -> tuple[tuple, tuple]:
        """The prior's k best candidates after `prefix` (renormalised) that the network knows: (their
        compact ids, their probabilities); the prior knows only training ids too."""
        mix = [(self.stoi[tok], q) for tok, q in prior_distribution(self.prior, question, prefix, k).items()
               if tok in self.stoi]
        return tuple(zip(*mix)) if mix else ((), ())

    def _prior_row(self, prefix: Sequence[int], vocab: int, dtype, question: str = "") -> torch.Tensor:
        """(vocab,): (1 - network weight) x the prior's distribution after `prefix`, in compact ids,
        zero elsewhere."""
        cols, vals = self._prior_entries(prefix, question)
        row = torch.zeros(vocab, dtype=dtype)
        if cols:                            # one vectorised write (element-by-element writes cost most of the time)
            row[torch.tensor(cols)] = torch.tensor([(1 - self.prior_weight) * q for q in vals], dtype=dtype)
        return row

    def _mix(self, logits: torch.Tensor, prefix: Sequence[int], question: str = "") -> torch.Tensor:
        """Next-token probabilities (V,) from the network's logits after `prefix` (PAD and UNK
        masked already), on the logits' device, with the prior mixed in if set."""
        probs = logits.softmax(-1)
        if self.prior is None or self.prior_weight == 1.0:
            return probs
        return probs * self.prior_weight + self._prior_row(prefix, len(probs), probs.dtype, question).to(probs.device)

    def predict_topk(self, pairs, k, visible=None):
        itos = torch.tensor(self.itos)
        out = []
        for j, p in enumerate(pairs):
            v = len(p.draft_ids) if visible is None else visible[j]
            lg = self._probs(p.draft_ids[:v], p.target_ids[:-1], p.question)   # (L-1, V): position i predicts i+1
            top = itos[lg.topk(k, dim=-1).indices].numpy()
            need = len(p.target_ids) - 1 - top.shape[0]              # beyond max_len
            out.append(np.vstack([top, -np.ones((need, k), dtype=top.dtype)]) if need > 0 else top)
        return out

    def propose(self, ctx: DraftContext, n: int) -> list[int]:
        return self._chain(pad_batch([self._src(ctx.draft_ids)], PAD), ctx.target_prefix, n, ctx.question)

    @torch.no_grad()
    def _chain(self, src: torch.Tensor, prefix: Sequence[int], n: int, question: str = "") -> list[int]:
        """Greedy chain of n drafts after `prefix`, the encoder run once on `src` (the draft's ids,
        or features), a mixed-in prior bound to `question`: eagerly on the CPU, as replayed CUDA
        graphs on a CUDA device."""
        self.model.eval()
        n = max(0, min(n, self.cfg.max_len + 1 - len(prefix)))         # beyond its positions: nothing to propose
        if graphs.wanted(self.device, self.cuda_graphs):
            if src.dtype == torch.long:                               # draft ids: padded to the network's positions
                src = nn.functional.pad(src, (0, self.cfg.max_len - src.shape[1]), value=PAD)
            static = graphs.captured(self, lambda: StaticChain(self.model, src.to(self.device), self.cfg.max_len),
                                     tuple(src.shape))
            static.encode(src)
            if self.prior is None or self.prior_weight == 1.0:        # argmax on the device, one sync per chain
                return [self.itos[t] for t in static.greedy(self._enc(prefix), n)]
            vocab, dtype = static.picker.inputs[0].shape[0], static.picker.inputs[0].dtype
            row = lambda drafted: self._prior_row([*prefix, *(self.itos[t] for t in drafted)], vocab, dtype, question)
            return [self.itos[t] for t in static.mixed(self._enc(prefix), n, row, self.prior_weight)]
        else:
            memory = self.model.encode(src.to(self.device))

            def step(seq):
                logits = self.model.decode(*memory, pad_batch([self._enc(seq)], PAD).to(self.device))[0, -1].clone()
                logits[:2] = -torch.inf                               # PAD/UNK are never drafts
                return logits
        seq = list(prefix)
        for _ in range(n):
            seq.append(self.itos[int(self._mix(step(seq), seq, question).argmax())])
        return seq[len(prefix):]

    # --- persistence --------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        torch.save({"config": asdict(self.cfg), "name": self.name, "itos": self.itos,
                    "state_dict": self.model.state_dict(), "prior_weight": self.prior_weight}, path)
        if self.prior is not None:
            self.prior.save(Path(path).with_suffix(".prior.json"))

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "CrossModalDrafter":
        ck = torch.load(path, map_location="cpu", weights_only=True)
        d = cls(CrossModalConfig(**ck["config"]), device, ck["name"])
        d.itos = list(ck["itos"])
        d.stoi = {t: i for i, t in enumerate(d.itos) if t >= 0}
        d.model = EncoderDecoder(d.cfg, len(d.itos)).to(d.device)
        d.model.load_state_dict(ck["state_dict"])
        d.model.eval()
        prior = Path(path).with_suffix(".prior.json")
        if prior.exists():
            d.set_prior(load_prior(prior), ck["prior_weight"])
        return d


def choose_prior_weight(drafter: CrossModalDrafter, prior, val: Sequence[RecordedPair],
                        grid: Sequence[float], gamma: int = 5, by: str = "token_match") -> dict[float, float]:
    """Set the network/prior mixture weight with the best validation score, `by` "token_match"
    (teacher-forced top-1) or "mat" (chains of gamma); returns the validation score of every
    weight tried (0 = the prior alone, 1 = the network)."""
    if by not in ("token_match", "mat"):
        raise ValueError(f"by must be 'token_match' or 'mat', got {by!r}")
    scores = {}
    for w in grid:
        drafter.set_prior(prior, w)
        e = evaluate(drafter, val, gamma)
        scores[float(w)] = e.token_match if by == "token_match" else e.sd.mat
    best = max(scores, key=lambda w: (scores[w], w))
    drafter.set_prior(prior, best)
    return scores
