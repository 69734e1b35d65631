"""Count and lookup drafters over the target's training answers (no network, no gradient).

Content-free controls (they read the target's accepted prefix, and the question, never the draft):

    target_prior_kn       interpolated Kneser-Ney n-gram of the target's training answers
    target_prior_suffix   a datastore of every training answer keyed by the accepted prefix's
                          suffix (REST / prompt-lookup / infini-gram): the next tokens seen after
                          the longest suffix that occurs, mixed with Kneser-Ney; optionally with
                          coverage (below), what an average training answer contains
    target_prior_question retrieval's store made of the training answers to the same question,
                          all weighted alike, mixed with Kneser-Ney; optionally with coverage
    target_prior_recent   (an online store only) the target's latest answers to the same question,
                          the latest weighted most, mixed with Kneser-Ney

Draft readers (the content enters through the draft model's visible answer):

    draft_retrieval       REST-style lookup in the target answers of the training clips whose
                          DRAFT answers resemble this one (TF-IDF over draft token 1-2-grams),
                          mixed with Kneser-Ney; optionally with coverage, what those clips'
                          target answers contain, and among the same question's answers only
    draft_feature_retrieval  the same, keyed by the draft model's hidden states after its prompt
                          (they exist before its first token); built where the draft model runs
    draft_recent          target_prior_recent with each latest answer also weighted by how much its
                          clip's draft answer resembles this one's (does the draft tell a new scene?)
    draft_copy            a pointer into the draft's tokens: Kneser-Ney with the probability of the
                          draft's content tokens (rare in target answers) that the target has not
                          said yet multiplied by (1 + boost)

Coverage (`coverage` > 0): the best candidates that the answer is expected to contain more often
than it has said them so far are made up to (1 + coverage) times as probable. An answer that lists
what a scene holds seldom names a thing twice; an n-gram model does not know what the answer has
already said, so it repeats it. The expected counts come from all training answers (content-free)
or from the retrieved clips' (content through the draft). Told the answer's own counts instead, it
is the oracle of helpers.study.event_camera.

All share one engine (`CountDrafter`): a next-token distribution from (what the visible draft
gives, the target's prefix), whose top-k, greedy chain (`propose`) and best-first token tree
(`propose_tree`) follow from it. Greedy chains are iterated top-1s, so the exact-SD shortcut holds.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from helpers.study.drafters.base import DraftContext, best_first_tree, pad_topk
from helpers.study.drafters.counts import CountIndex, Dist
from helpers.study.pairs import RecordedPair


class CountDrafter:
    """Shared engine. Subclasses set name/needs and implement `_fit(train)`, `state(draft_ids)`
    (what the visible draft gives, computed once per draft) and `dist(state, prefix)`."""
    name = "count"
    needs = ""
    ranks = True
    reads_draft = False
    tree_branch = 4      # candidates pushed per expanded tree node

    def fit(self, train: Sequence[RecordedPair]):
        self.train_docs = [tuple(p.target_ids) for p in train]
        self.train_drafts = [tuple(p.draft_ids) for p in train]
        self.train_questions = [p.question for p in train]
        self._fit()
        return self

    def _fit(self) -> None:
        raise NotImplementedError

    def update(self, pairs: Sequence[RecordedPair]):
        """Take more pairs into the datastore, settings kept: the same drafter as one fitted on all
        the pairs, in the time the new pairs' own contexts take (an online store grows this way)."""
        docs, drafts = [tuple(p.target_ids) for p in pairs], [tuple(p.draft_ids) for p in pairs]
        self.train_docs, self.train_drafts = self.train_docs + docs, self.train_drafts + drafts
        self.train_questions = self.train_questions + [p.question for p in pairs]
        if docs:
            self._update(docs)
        return self

    def _update(self, docs: list[tuple[int, ...]]) -> None:
        self._fit()

    def state(self, draft_ids: Sequence[int]):
        return None

    def state_for(self, key: str, question: str, draft_ids: Sequence[int]):
        """The state for pair `key` (asked `question`) with `draft_ids` visible: what the draft gives,
        by default (a drafter keyed by what exists per pair before any draft token overrides it)."""
        return self.state(draft_ids)

    def dist(self, state, prefix: Sequence[int]) -> Dist:
        raise NotImplementedError

    # --- the Drafter interface ------------------------------------------------------------
    def predict_topk(self, pairs, k, visible=None):
        out = []
        for j, p in enumerate(pairs):
            v = len(p.draft_ids) if visible is None else visible[j]
            st = self.state_for(p.key, p.question, p.draft_ids[:v])
            rows = [pad_topk([w for w, _ in self.dist(st, p.target_ids[: i + 1]).topk(k)], k)
                    for i in range(len(p.target_ids) - 1)]
            out.append(np.array(rows, dtype=np.int64).reshape(-1, k))
        return out

    def propose(self, ctx: DraftContext, n: int) -> list[int]:
        st, seq = self.state_for(ctx.key, ctx.question, ctx.draft_ids), list(ctx.target_prefix)
        for _ in range(n):
            top = self.dist(st, seq).topk(1)
            if not top:
                break
            seq.append(top[0][0])
        return seq[len(ctx.target_prefix):]

    def propose_tree(self, ctx: DraftContext, n_nodes: int) -> list[tuple[int, int]]:
        st, prefix = self.state_for(ctx.key, ctx.question, ctx.draft_ids), tuple(ctx.target_prefix)
        return best_first_tree(lambda path: self.dist(st, prefix + path).topk(self.tree_branch), n_nodes)

    # --- persistence: the training answers and the settings are the whole model -------------
    def settings(self) -> dict:
        return {}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"class": type(self).__name__, "name": self.name, "settings": self.settings(),
                                          "tree_branch": self.tree_branch, "train_docs": self.train_docs,
                                          "train_drafts": self.train_drafts, "train_questions": self.train_questions}))


COVERAGE_TOP = 20   # coverage reweights this many best candidates of the distribution it adjusts


def covered(d: Dist, expected: Callable[[int], float], prefix: Sequence[int], boost: float,
            top: int = COVERAGE_TOP) -> Dist:
    """`d` with each of its `top` best tokens w made (1 + boost * r) times as probable, where
    r = min(1, expected(w) - times w occurs in the prefix) when positive: the tokens the answer is
    expected to contain and has not said (as often) yet. Renormalised; boost 0 leaves `d` as it is."""
    if boost <= 0:
        return d
    said, cands = Counter(prefix), d.topk(top)
    extra = {}
    for w, p in cands:
        r = min(1.0, expected(w) - said[w])
        if r > 0:
            extra[w] = boost * p * r
    if not extra:
        return d
    z = 1 + sum(extra.values())
    out = _Reranked(**vars(d.plus(Dist(extra)).scaled(1 / z)))
    out.ranked = sorted(((w, (p + extra.get(w, 0.0)) / z) for w, p in cands), key=lambda wp: (-wp[1], wp[0]))
    out.complete = len(cands) < top            # every token of positive probability is among them
    return out


class _Reranked(Dist):
    """A Dist whose best tokens are known: only candidates were made more probable, so the k <= top
    best of the result are the k best of the reweighted candidates (a token outside them was at
    most as probable as the last, with a larger id on a tie, and was not raised)."""
    ranked: list[tuple[int, float]]
    complete: bool

    def _topk(self, k: int) -> list[tuple[int, float]]:
        if k <= len(self.ranked) or self.complete:
            return self.ranked[:k]
        return super()._topk(k)


class TokenCounts:
    """Every training answer's token counts as one (answers, distinct tokens) matrix, so that the
    expected counts under any weighting of the answers are one product."""

    def __init__(self, docs: Sequence[Sequence[int]]):
        self.col: dict[int, int] = {}
        self.counts = np.zeros((0, 0), dtype=np.float32)
        self.add(docs)

    def add(self, docs: Sequence[Sequence[int]]) -> "TokenCounts":
        """More answers as rows (tokens not seen before as new columns): an online store grows so."""
        for t in sorted({t for d in docs for t in d} - set(self.col)):
            self.col[t] = len(self.col)
        rows = np.zeros((len(docs), len(self.col)), dtype=np.float32)
        for j, d in enumerate(docs):
            for t, c in Counter(d).items():
                rows[j, self.col[t]] = c
        grown = np.pad(self.counts, ((0, 0), (0, len(self.col) - self.counts.shape[1])))
        self.counts = np.concatenate([grown, rows])
        return self

    def expected(self, weights: np.ndarray | None = None) -> Callable[[int], float]:
        """w -> the weighted mean count of token w per answer (weights None: all answers alike)."""
        if not len(self.counts):
            return lambda w: 0.0
        mean = self.counts.mean(axis=0) if weights is None else (weights @ self.counts) / max(float(weights.sum()), 1e-12)
        col = self.col
        return lambda w: float(mean[col[w]]) if w in col else 0.0


class KneserNeyPrior(CountDrafter):
    needs = "the target's accepted prefix only"

    def __init__(self, order: int = 8, name: str = "target_prior_kn"):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order, self.name = int(order), name

    def _fit(self) -> None:
        self.index = CountIndex(self.train_docs, self.order - 1)

    def _update(self, docs) -> None:
        self.index.add(docs)

    def dist(self, state, prefix):
        return self.index.kneser_ney(prefix)

    def settings(self):
        return {"order": self.order}


def _check_coverage(coverage: float) -> float:
    if coverage < 0:
        raise ValueError(f"coverage must be >= 0, got {coverage}")
    return float(coverage)


class SuffixPrior(KneserNeyPrior):
    """p = weight * (next tokens after the longest matching suffix, up to max_ctx tokens, at least
    min_match) + (1 - weight) * Kneser-Ney; all of Kneser-Ney where no suffix matches. With
    `coverage`, the tokens an average training answer contains more often than this one has said
    them are made more probable (`covered`): still the target's prefix only."""
    needs = "the target's accepted prefix only"

    def __init__(self, max_ctx: int = 16, weight: float = 0.5, min_match: int = 2, order: int = 8,
                 coverage: float = 0.0, name: str = "target_prior_suffix"):
        super().__init__(order, name)
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.max_ctx, self.weight, self.min_match = int(max_ctx), float(weight), int(min_match)
        self.coverage = _check_coverage(coverage)

    def _fit(self) -> None:
        super()._fit()
        self.store = CountIndex(self.train_docs, self.max_ctx)
        self.counts = TokenCounts(self.train_docs)
        self.expected = self.counts.expected()

    def _update(self, docs) -> None:
        super()._update(docs)
        self.store.add(docs)
        self.expected = self.counts.add(docs).expected()

    def dist(self, state, prefix):
        kn = self.index.kneser_ney(prefix)
        hit, _ = self.store.longest(prefix, min_ctx=self.min_match)
        d = kn.scaled(1 - self.weight).plus(Dist({w: self.weight * p for w, p in hit.items()})) if hit else kn
        return covered(d, self.expected, prefix, self.coverage)

    def settings(self):
        return {"order": self.order, "max_ctx": self.max_ctx, "weight": self.weight, "min_match": self.min_match,
                "coverage": self.coverage}


# --- draft readers ----------------------------------------------------------------------------

def ngram_features(ids: Sequence[int], n_max: int = 2) -> Counter:
    ids = list(ids)
    return Counter(tuple(ids[i:i + n]) for n in range(1, n_max + 1) for i in range(len(ids) - n + 1))


class Tfidf:
    """Cosine similarity of TF-IDF vectors (sublinear tf, smoothed idf) of token 1..n_max-grams."""

    def __init__(self, docs: Sequence[Sequence[int]], n_max: int = 2):
        self.n_max, feats = n_max, [ngram_features(d, n_max) for d in docs]
        df = Counter(f for fs in feats for f in fs)
        self.col = {f: i for i, f in enumerate(df)}
        self.idf = np.array([math.log((1 + len(docs)) / (1 + df[f])) + 1 for f in self.col], dtype=np.float32)
        self.matrix = np.zeros((len(docs), len(self.col)), dtype=np.float32)     # (docs, features), rows unit length
        for j, fs in enumerate(feats):
            cols = [self.col[f] for f in fs]
            self.matrix[j, cols] = [1 + math.log(c) for c in fs.values()]
        self.matrix *= self.idf
        self.matrix /= np.maximum(np.linalg.norm(self.matrix, axis=1, keepdims=True), 1e-12)

    def similarity(self, query: Sequence[int]) -> np.ndarray:   # (docs,) cosine similarities
        q = [(self.col[f], 1 + math.log(c)) for f, c in ngram_features(query, self.n_max).items() if f in self.col]
        if not q:
            return np.zeros(len(self.matrix))
        cols = np.array([c for c, _ in q])
        vals = np.array([v for _, v in q], dtype=np.float32) * self.idf[cols]
        return self.matrix[:, cols] @ (vals / np.linalg.norm(vals))


class DraftRetrieval(KneserNeyPrior):
    """REST-style retrieval keyed by the draft's answer: the training clips whose draft answers are
    most similar to the visible draft (top `neighbours`, weights exp((sim - max) / temperature))
    give a Witten-Bell n-gram model of THEIR TARGET answers (contexts up to max_ctx tokens); it is
    mixed with Kneser-Ney over all training answers: p = weight * p_ret + (1 - weight) * p_kn, the
    mass p_ret leaves unassigned going to Kneser-Ney. With `coverage`, the tokens those clips'
    target answers contain (their weighted mean counts) more often than this answer has said them
    are made more probable (`covered`). No visible draft tokens: Kneser-Ney, with the coverage of
    an average training answer. With same_question and `question_backoff` q > 0, what the retrieved
    answers leave is not given to Kneser-Ney alone but to the question prior's mixture (all training
    answers to the same question: q * p_question + (1 - q) * p_kn, the mass p_question leaves going
    to Kneser-Ney), so that where the draft's neighbours disagree, the question decides."""
    needs = "every draft token that exists (retrieval key), and the target's accepted prefix"
    reads_draft = True

    def __init__(self, neighbours: int = 20, temperature: float = 0.1, weight: float = 0.3, max_ctx: int = 7,
                 order: int = 8, coverage: float = 0.0, same_question: bool = False, question_backoff: float = 0.0,
                 name: str = "draft_retrieval"):
        super().__init__(order, name)
        self.neighbours, self.temperature, self.weight, self.max_ctx = int(neighbours), float(temperature), float(weight), int(max_ctx)
        self.coverage = _check_coverage(coverage)
        self.same_question = bool(same_question)
        if not 0.0 <= float(question_backoff) <= 1.0:
            raise ValueError(f"question_backoff must lie in [0, 1], got {question_backoff}")
        self.question_backoff = float(question_backoff)

    def _fit(self) -> None:
        super()._fit()
        self.store = CountIndex(self.train_docs, self.max_ctx)
        self._index_keys()
        self.counts = TokenCounts(self.train_docs)
        self.expected = self.counts.expected()     # an average training answer's (no draft visible)
        self._by_question: dict = {}
        self._questions = np.array(self.train_questions, dtype=object)

    def _update(self, docs) -> None:
        super()._update(docs)
        self.store.add(docs)
        self._index_keys()
        self.expected = self.counts.add(docs).expected()
        self._by_question = {}
        self._questions = np.array(self.train_questions, dtype=object)

    def _index_keys(self) -> None:
        """What the training answers are retrieved by: their drafts' TF-IDF, rebuilt whole when the
        store grows (document frequencies change with every answer)."""
        self.tfidf = Tfidf(self.train_drafts)

    def state(self, draft_ids):
        """(weights over the training answers, expected token counts), or None without a usable draft."""
        return self._state_of(self.tfidf.similarity(draft_ids))

    def state_for(self, key, question, draft_ids):
        """With same_question, only training answers to the same question are retrieved; before any
        draft token is usable, all of them alike (what target_prior_question does throughout)."""
        if not self.same_question:
            return self.state(draft_ids)
        same = self.asked(question)
        sim = self.tfidf.similarity(draft_ids) * same
        return self._backed_off(self._state_of(sim, same) if sim.any() else self.question_state(question), same)

    def _backed_off(self, state, same: np.ndarray):
        """state + the question's answers as a third element when question_backoff is on (see dist)."""
        return (*state[:2], same) if state is not None and self.question_backoff > 0 and same.any() else state

    def asked(self, question: str) -> np.ndarray:
        """(training answers,) 1.0 where the training pair was asked `question`."""
        return (self._questions == question).astype(np.float64)

    def question_state(self, question: str):
        """Every training answer to `question` weighted alike (None if none was asked it), cached."""
        if question not in self._by_question:
            w = self.asked(question)
            self._by_question[question] = (w, self.counts.expected(w)) if w.any() else None   # whatever coverage is set later
        return self._by_question[question]

    def _state_of(self, sim: np.ndarray, allowed: np.ndarray | None = None):
        """(weights, expected counts) from one similarity per training answer (the top `neighbours`
        of the `allowed` answers, default all); None if all are 0."""
        if not sim.any():
            return None
        order = np.argsort(-sim, kind="stable")
        if allowed is not None:
            order = order[allowed[order] > 0]
        top = order[: self.neighbours]
        if not len(top):
            return None
        w = np.zeros(len(sim))
        w[top] = np.exp((sim[top] - sim[top].max()) / self.temperature)
        return w, (self.counts.expected(w) if self.coverage > 0 else None)

    def _mixed(self, base: Dist, prefix, w: np.ndarray, weight: float) -> Dist:
        """weight * (the answers weighted by w, continuing prefix) + what they leave, given to base."""
        if weight == 0:
            return base
        ret, left = self.store.weighted(prefix, w)
        return base.scaled(1 - weight + weight * left).plus(Dist({t: weight * p for t, p in ret.items()}))

    def dist(self, state, prefix):
        kn = self.index.kneser_ney(prefix)
        if state is None:
            return covered(kn, self.expected, prefix, self.coverage)
        w, expected, *question = state
        base = self._mixed(kn, prefix, question[0], self.question_backoff) if question else kn
        return covered(self._mixed(base, prefix, w, self.weight), expected, prefix, self.coverage)  # expected None: coverage 0

    def settings(self):
        return {"order": self.order, "neighbours": self.neighbours, "temperature": self.temperature,
                "weight": self.weight, "max_ctx": self.max_ctx, "coverage": self.coverage,
                "same_question": self.same_question, "question_backoff": self.question_backoff}

    def keyed_by_targets(self) -> "DraftRetrieval":
        """A copy (settings and answers kept) whose key is each training clip's TARGET answer instead
        of its draft's; asked with a target answer in place of the draft, it retrieves the clips
        whose target answers resemble it: an oracle no drafter has (event_camera.retrieval_oracle_mat)."""
        out = type(self)(**self.settings(), name=f"{self.name}_keyed_by_targets")
        out.train_docs, out.train_drafts = list(self.train_docs), list(self.train_docs)
        out.train_questions = list(self.train_questions)
        out.tree_branch = self.tree_branch
        out._fit()
        return out


class QuestionPrior(DraftRetrieval):
    """Content-free: the training answers to the same question, all weighted alike, as retrieval's
    store (a Witten-Bell n-gram of those answers mixed with Kneser-Ney over all, and with coverage,
    what an answer to this question contains on average). Reads the question, which every drafter
    is given, and the target's accepted prefix; no draft."""
    needs = "the question and the target's accepted prefix"
    reads_draft = False

    def __init__(self, weight: float = 0.3, max_ctx: int = 7, order: int = 8, coverage: float = 0.0,
                 name: str = "target_prior_question"):
        super().__init__(neighbours=0, temperature=1.0, weight=weight, max_ctx=max_ctx, order=order, coverage=coverage,
                         same_question=True, name=name)

    def _index_keys(self) -> None:          # retrieved by the question alone: no key to index
        pass

    def state(self, draft_ids):
        raise TypeError(f"{self.name} is keyed by the question: call state_for(key, question, draft_ids)")

    def state_for(self, key, question, draft_ids):
        return self.question_state(question)

    def settings(self):
        return {"order": self.order, "weight": self.weight, "max_ctx": self.max_ctx, "coverage": self.coverage}


class RecentAnswers(DraftRetrieval):
    """The target's latest answers in an online store (those `update` added after `fit`): the last
    `horizon` answers to the same question, the latest weighted 1 and each earlier one
    exp(-age / tau), as retrieval's store, mixed with Kneser-Ney over everything (`weight`). A
    deployment answering clip after clip of one recording has them; consecutive clips often show the
    same scene. Content-free (target_prior_recent) with temperature 0. With temperature > 0
    (draft_recent) each recent answer's weight is also multiplied by exp((sim - max sim) / temperature),
    sim the TF-IDF cosine of its clip's draft answer with this clip's visible one: if the event camera's
    answer changes when the scene does, the answers of clips that look alike to it count more.
    Nothing in the stream yet (offline, or the first clip asked a question): Kneser-Ney alone."""

    def __init__(self, tau: float = 2.0, horizon: int = 8, weight: float = 0.6, temperature: float = 0.0,
                 max_ctx: int = 7, order: int = 8, name: str = "target_prior_recent"):
        if tau <= 0 or int(horizon) < 1 or temperature < 0:
            raise ValueError(f"need tau > 0, horizon >= 1 and temperature >= 0; got {tau}, {horizon}, {temperature}")
        super().__init__(neighbours=0, temperature=temperature, weight=weight, max_ctx=max_ctx, order=order, name=name)
        self.tau, self.horizon = float(tau), int(horizon)
        self.n_offline: int | None = None    # answers after the first n_offline came from the stream
        self._keys_of = -1                   # how many drafts the TF-IDF keys cover (built when first needed)

    @property
    def reads_draft(self) -> bool:          # settings may change between calls (event_camera.online_sweep)
        return self.temperature > 0

    @property
    def needs(self) -> str:
        return (("every draft token that exists (which recent answers count), " if self.reads_draft else "")
                + "the target's latest answers to the same question (an online store) and its accepted prefix")

    def fit(self, train: Sequence[RecordedPair]):
        self.n_offline = len(train)
        return super().fit(train)

    def _fit(self) -> None:
        if self.n_offline is None:           # loaded from a file: everything it holds counts as offline
            self.n_offline = len(self.train_docs)
        self._keys_of = -1                   # fitted anew: keys built again when read
        super()._fit()

    def _index_keys(self) -> None:          # the drafts' TF-IDF: built in state_for, only when a draft weighs the answers
        pass

    def state(self, draft_ids):
        raise TypeError(f"{self.name} keeps the latest answers per question: call state_for(key, question, draft_ids)")

    def state_for(self, key, question, draft_ids):
        recent = self.n_offline + np.flatnonzero(self._questions[self.n_offline:] == question)[-self.horizon:]
        if not len(recent):
            return None
        w = np.zeros(len(self.train_docs))
        w[recent] = np.exp(-np.arange(len(recent))[::-1] / self.tau)
        if self.reads_draft and len(draft_ids):
            if self._keys_of != len(self.train_drafts):
                self.tfidf, self._keys_of = Tfidf(self.train_drafts), len(self.train_drafts)
            sim = self.tfidf.similarity(draft_ids)[recent]
            w[recent] *= np.exp((sim - sim.max()) / self.temperature)
        return w, None

    def settings(self):
        return {"order": self.order, "tau": self.tau, "horizon": self.horizon, "weight": self.weight,
                "temperature": self.temperature, "max_ctx": self.max_ctx}


class FeatureRetrieval(DraftRetrieval):
    """draft_retrieval keyed by the draft model's hidden states after its prompt
    (helpers.study.drafters.features.extract: the mean over the visual rows and the last prompt
    position) instead of its answer's words: the training pairs whose features are closest (cosine
    of per-dimension standardised vectors; with same_question, among the pairs asked the same
    question) give the retrieved answers and their coverage. The features exist at the draft model's
    prefill, before its first token, so a streaming draft costs this drafter nothing. Defined only
    for pairs whose features were extracted (by pair key); not saved (stage 35 builds it)."""
    needs = "the draft model's hidden states after its prompt (no draft token), and the target's accepted prefix"
    reads_draft = False

    def __init__(self, features: dict, neighbours: int = 20, temperature: float = 0.1, weight: float = 0.3,
                 max_ctx: int = 7, order: int = 8, coverage: float = 0.0, same_question: bool = False,
                 question_backoff: float = 0.0, name: str = "draft_feature_retrieval"):
        super().__init__(neighbours, temperature, weight, max_ctx, order, coverage, same_question, question_backoff, name)
        self.features = features

    def fit(self, train: Sequence[RecordedPair]):
        self.train_keys = [p.key for p in train]
        return super().fit(train)

    def update(self, pairs: Sequence[RecordedPair]):
        self.train_keys = self.train_keys + [p.key for p in pairs]
        return super().update(pairs)

    def _vectors(self, keys: Sequence[str]) -> np.ndarray:
        missing = [k for k in keys if k not in self.features]
        if missing:
            raise KeyError(f"no draft features for {missing[:5]} ({len(missing)} pairs)")
        return np.stack([np.asarray(self.features[k], np.float64).reshape(-1) for k in keys])

    def _index_keys(self) -> None:
        """The training pairs' features, standardised per dimension (mean and scale of all of them,
        recomputed when the store grows) and scaled to unit length."""
        x = self._vectors(self.train_keys)                           # (train pairs, features)
        self.mean, self.scale = x.mean(0), np.maximum(x.std(0), 1e-6)
        self.keys_matrix = self._unit(x)

    def _unit(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)

    def state(self, draft_ids):
        raise TypeError(f"{self.name} is keyed by the pair's draft-model features: call state_for(key, question, draft_ids)")

    def state_for(self, key, question, draft_ids):
        sim = self.keys_matrix @ self._unit(self._vectors([key]))[0]
        if not self.same_question:
            return self._state_of(sim)
        same = self.asked(question)
        return self._backed_off(self._state_of(sim, same), same)


class DraftCopy(KneserNeyPrior):
    """A pointer into the draft's tokens mixed with the prior: Kneser-Ney, with every content token
    of the visible draft (one that occurs in at most `max_doc_share` of the training target answers)
    that the target has not said yet made (1 + boost) times as probable, renormalised."""
    needs = "every draft token that exists (copy candidates), and the target's accepted prefix"
    reads_draft = True

    def __init__(self, boost: float = 1.0, max_doc_share: float = 0.5, order: int = 8, name: str = "draft_copy"):
        super().__init__(order, name)
        if boost < 0:
            raise ValueError(f"boost must be >= 0, got {boost}")
        self.boost, self.max_doc_share = float(boost), float(max_doc_share)

    def _fit(self) -> None:
        super()._fit()
        self.doc_freq = Counter(t for d in self.train_docs for t in set(d))

    def _update(self, docs) -> None:
        super()._update(docs)
        self.doc_freq.update(t for d in docs for t in set(d))

    def state(self, draft_ids):
        most = self.max_doc_share * len(self.train_docs)
        return frozenset(t for t in draft_ids if self.doc_freq.get(t, 0) <= most)

    def dist(self, state, prefix):
        kn = self.index.kneser_ney(prefix)
        copy = state - set(prefix) if state else ()
        if not copy or self.boost == 0:
            return kn
        extra = {w: self.boost * kn.prob(w) for w in copy}
        return kn.plus(Dist(extra)).scaled(1 / (1 + sum(extra.values())))

    def settings(self):
        return {"order": self.order, "boost": self.boost, "max_doc_share": self.max_doc_share}


CLASSES = {c.__name__: c for c in (KneserNeyPrior, SuffixPrior, DraftRetrieval, QuestionPrior, DraftCopy, RecentAnswers)}


def load(path: str | Path) -> CountDrafter:
    d = json.loads(Path(path).read_text())
    m = CLASSES[d["class"]](**d["settings"], name=d["name"])
    m.train_docs = [tuple(t) for t in d["train_docs"]]
    m.train_drafts = [tuple(t) for t in d["train_drafts"]]
    m.train_questions = list(d.get("train_questions") or [""] * len(m.train_docs))   # files written before questions were kept
    m.tree_branch = int(d["tree_branch"])
    m._fit()
    return m
