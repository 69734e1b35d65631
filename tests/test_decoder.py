"""The static-cache decoder against transformers' own forward: prefill, decode, verify-k, rollback,
tree verification, batched == batch-1 (fp32, tiny random LLaMA, CPU)."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.models.decoder import StaticDecoder, cache_slots

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def hf_logits(lm, ids):
    with torch.no_grad():
        return lm(input_ids=torch.tensor([ids])).logits[0]                 # (T, V)


def prompts(n_rows, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n_rows)]


def prefill(dec, lm, rows):
    T = max(map(len, rows))
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])              # right-padded, no left padding
    return dec.prefill(lm.model.embed_tokens(ids), [len(r) for r in rows])


def test_prefill_and_decode_match_transformers_row_by_row(lm):
    rows = prompts(3)
    dec = StaticDecoder.for_model(lm, batch=3, max_len=40)
    logits = prefill(dec, lm, rows)
    seqs = [list(r) for r in rows]
    for step in range(6):
        for b, r in enumerate(seqs):
            assert torch.allclose(logits[b], hf_logits(lm, r)[-1], atol=1e-4), (step, b)
        nxt = logits.argmax(-1)
        for b, r in enumerate(seqs):
            r.append(int(nxt[b]))
        logits = dec.decode(nxt)
    assert dec.lengths.tolist() == [len(r) for r in seqs]                   # every token fed is cached


def test_batched_greedy_equals_batch_one(lm):
    rows = prompts(4, seed=2)

    def greedy(dec_rows):
        dec = StaticDecoder.for_model(lm, batch=len(dec_rows), max_len=40)
        tok = prefill(dec, lm, dec_rows).argmax(-1)
        out = [tok]
        for _ in range(8):
            tok = dec.decode(tok).argmax(-1)
            out.append(tok)
        return torch.stack(out, 1)                                          # (B, 9)

    together = greedy(rows)
    for b, r in enumerate(rows):
        assert torch.equal(together[b], greedy([r])[0])


@pytest.mark.parametrize("attention", ["matmul", "sdpa", "auto"])
def test_verify_k_equals_step_by_step_and_rollback_is_setting_lengths(lm, attention):
    rows = prompts(2, seed=3)
    dec = StaticDecoder.for_model(lm, batch=2, max_len=40, attention=attention)
    first = prefill(dec, lm, rows).argmax(-1)
    drafts = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    tokens = torch.cat([first[:, None], drafts], 1)                        # (B, 5): last + 4 drafts
    start = dec.lengths.clone()
    scored = dec.verify(tokens)                                             # (B, 5, V)
    assert torch.equal(dec.lengths, start)
    for b, r in enumerate(rows):
        ref = hf_logits(lm, r + tokens[b].tolist())[len(r):]                # next-token logits after each
        assert torch.allclose(scored[b], ref, atol=1e-4)
    # row 0 accepts 2 drafts, row 1 none: keep last + accepted, continue with the target's own token
    dec.set_lengths(start + torch.tensor([3, 1]))
    nxt = torch.stack([scored[0, 2].argmax(), scored[1, 0].argmax()])
    after = dec.decode(nxt)
    for b, keep in enumerate((3, 1)):
        seq = rows[b] + tokens[b, :keep].tolist() + [int(nxt[b])]
        assert torch.allclose(after[b], hf_logits(lm, seq)[-1], atol=1e-4)


def test_tree_verification_scores_every_path_and_keep_path_compacts(lm):
    rows = prompts(1, seed=4)
    dec = StaticDecoder.for_model(lm, batch=1, max_len=40)
    last = prefill(dec, lm, rows).argmax(-1)
    # root (the last emitted token), two children, a grandchild under the second child
    tokens = torch.tensor([[int(last), 20, 30, 31]])
    parents = torch.tensor([[-1, 0, 0, 2]])
    scored = dec.verify_tree(tokens, parents)
    paths = {0: [0], 1: [0, 1], 2: [0, 2], 3: [0, 2, 3]}
    for u, path in paths.items():
        seq = rows[0] + [int(tokens[0, i]) for i in path]
        assert torch.allclose(scored[0, u], hf_logits(lm, seq)[-1], atol=1e-4), u
    dec.keep_path([[0, 2, 3]])                                              # accept root -> 30 -> 31
    assert int(dec.lengths[0]) == len(rows[0]) + 3
    out = dec.decode(torch.tensor([7]))
    assert torch.allclose(out[0], hf_logits(lm, rows[0] + [int(last), 30, 31, 7])[-1], atol=1e-4)


def test_writing_past_the_cache_is_an_error(lm):
    dec = StaticDecoder.for_model(lm, batch=1, max_len=12)
    prefill(dec, lm, [[5] * 10])
    with pytest.raises(ValueError, match="past the end"):
        dec.verify(torch.tensor([[1, 2, 3, 4]]))


def test_decode_refuses_to_write_past_the_cache(lm):
    dec = StaticDecoder.for_model(lm, batch=1, max_len=11)
    tok = prefill(dec, lm, [[5] * 10]).argmax(-1)
    dec.decode(tok)                                                          # slot 10: the last one
    with pytest.raises(ValueError, match="past the end"):
        dec.decode(tok)


def test_cache_slots_are_aligned_on_a_gpu_only(lm):
    assert [cache_slots(n, "cuda") for n in (2189, 2176, 1)] == [2240, 2176, 64]
    assert cache_slots(2189, "cpu") == 2189 and StaticDecoder.for_model(lm, batch=1, max_len=11).max_len == 11
