"""Our EventGPT (helpers.models.eventgpt): the 7B shapes and key set, pooling, the feature adaptor
applied once, prompt ids and embedding, checkpoint loading in the official layout, greedy decoding.
CPU, fp32, tiny configs (real 336 px / 14 px patches, so 577 vision tokens)."""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from safetensors.torch import save_file

from helpers.models.eventgpt import (EVENT_TOKEN_INDEX, EventGPTConfig, build_eventgpt, config_from_checkpoint,
                                     embed_prompt, expected_keys, generate_greedy, get_event_features,
                                     load_eventgpt, official_state_dict, prompt_ids, spatio_temporal_pool)
from helpers.models.prompts import DRAFT_SYSTEM
from helpers.models.tokenizer import load_tokenizer, train_tokenizer
from helpers.world.captions import QUESTIONS
from conftest import LLAMA_TOKENIZER, require_shared

pytestmark = pytest.mark.usefixtures("one_torch_thread")
Q = QUESTIONS[0]                                   # "What are the key elements in this scene?"


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(list(QUESTIONS) * 3 + [DRAFT_SYSTEM, "<ev_start> <ev_end> USER: ASSISTANT:"],
                           vocab_size=400)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return build_eventgpt(EventGPTConfig.tiny(vocab=len(tok)))


def _pixels(t, seed=0):
    return torch.randn(t, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def test_seven_b_shapes_and_official_key_set():
    cfg = EventGPTConfig.seven_b()
    m = build_eventgpt(cfg, device="meta", init=False)               # shapes only, no memory
    n_llm, n_vision = (sum(p.numel() for p in mod.parameters()) for mod in (m.language_model, m.vision_tower))
    assert n_llm == 6_738_415_616                                      # LLaMA-2 / Vicuna-7B
    assert n_vision == 303_507_456                                     # CLIP ViT-L/14-336 vision
    assert [tuple(l.weight.shape) for l in m.visual_projector[::2]] == [(4096, 1024), (4096, 4096)]
    assert tuple(m.feature_adaptor.weight.shape) == (4096, 4096) and m.feature_adaptor.bias is not None
    assert cfg.n_vision_tokens == 577
    sd = official_state_dict(m)
    assert tuple(sd["model.visual_tower.visual_tower.vision_model.embeddings.position_embedding.weight"].shape) == (577, 1024)
    assert sorted(sd) == sorted(expected_keys(cfg)) and len(sd) == 688
    assert "lm_head.weight" in sd and "model.layers.31.mlp.down_proj.weight" in sd


def test_pooling_shapes_and_values():
    assert tuple(spatio_temporal_pool(torch.zeros(1, 577, 8)).shape) == (578, 8)
    assert tuple(spatio_temporal_pool(torch.zeros(5, 577, 8)).shape) == (582, 8)
    f = torch.arange(1.0, 13.0).reshape(2, 3, 2)                      # (T=2, N=3, D=2)
    # frame means [3, 4], [9, 10]; token means over frames [4, 5], [6, 7], [8, 9]
    assert spatio_temporal_pool(f).tolist() == [[3, 4], [9, 10], [4, 5], [6, 7], [8, 9]]


def test_feature_adaptor_applied_exactly_once(model):
    d = model.config.hidden
    with torch.no_grad():
        model.feature_adaptor.weight.copy_(2 * torch.eye(d))
        model.feature_adaptor.bias.fill_(0.5)
        px = _pixels(5)
        hidden = model.vision_tower(pixel_values=px).last_hidden_state   # (5, 577, Dv), CLS kept, no post-LN
        proj = model.visual_projector(hidden)                           # (5, 577, D)
        got = get_event_features(model, px)
        torch.manual_seed(1)
        model.feature_adaptor.reset_parameters()                        # leave the shared model random again
    assert tuple(got.shape) == (582, d)
    once, twice = spatio_temporal_pool(2 * proj + 0.5), spatio_temporal_pool(2 * (2 * proj + 0.5) + 0.5)
    assert torch.allclose(got, once, atol=1e-5)
    assert not torch.allclose(got, twice, atol=1e-2)
    assert tuple(get_event_features(model, _pixels(1)).shape) == (578, d)


def test_prompt_ids_structure(tok):
    ids = prompt_ids(tok, Q)
    k = ids.index(EVENT_TOKEN_INDEX)
    assert ids[0] == tok.bos_token_id and ids.count(EVENT_TOKEN_INDEX) == 1 and tok.bos_token_id not in ids[1:]
    assert tok.decode(ids[1:k]) == f"{DRAFT_SYSTEM} USER: <ev_start>"
    assert tok.decode(ids[k + 1:]) == f"<ev_end>\n{Q} ASSISTANT:"
    with pytest.raises(ValueError, match="must not contain <event>"):
        prompt_ids(tok, "<event> what?")


def test_real_tokenizer_60_ids_641_embeddings():
    tok = load_tokenizer(require_shared(LLAMA_TOKENIZER))
    ids = prompt_ids(tok, Q)
    assert len(ids) == 60 and ids[0] == 1                              # eventgpt_model.md: measured 60 ids
    torch.manual_seed(0)
    m = build_eventgpt(EventGPTConfig.tiny(vocab=32000))
    feats = torch.randn(582, m.config.hidden)                          # 5 event images: 5 + 577 rows
    emb = embed_prompt(m, ids, feats)
    assert tuple(emb.shape) == (1, 641, m.config.hidden)              # ... -> 641 embeddings
    k = ids.index(EVENT_TOKEN_INDEX)
    table = m.language_model.get_input_embeddings().weight
    assert torch.equal(emb[0, k:k + 582], feats)
    assert torch.equal(emb[0, :k], table[ids[:k]]) and torch.equal(emb[0, k + 582:], table[ids[k + 1:]])


def test_embed_prompt_errors(model, tok):
    feats = torch.zeros(578, model.config.hidden)
    with pytest.raises(ValueError, match="exactly one -200"):
        embed_prompt(model, [1, 5, 6], feats)
    with pytest.raises(ValueError, match=r"event_features must be \(F, 64\)"):
        embed_prompt(model, prompt_ids(tok, Q), torch.zeros(578, 32))


# ----------------------------------------------------------------------------- checkpoints
def _logits(m, tok):
    with torch.no_grad():
        feats = get_event_features(m, _pixels(2, seed=3))
        return feats, m.language_model(inputs_embeds=embed_prompt(m, prompt_ids(tok, Q), feats)).logits


def _save_sharded(model, folder, drop=(), add=None, shape_fix=None):
    """The model in the official layout: two safetensors shards + index json."""
    sd = {k: v.clone() for k, v in official_state_dict(model).items() if k not in drop}
    sd.update(add or {})
    if shape_fix:
        sd[shape_fix] = torch.cat([sd[shape_fix], sd[shape_fix][:1]])  # one extra row
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    folder.mkdir(parents=True, exist_ok=True)
    for file, keys in shards.items():
        save_file({k: sd[k].contiguous() for k in keys}, str(folder / file))
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def test_checkpoint_round_trip_safetensors_and_bin(model, tok, tmp_path):
    feats, logits = _logits(model, tok)
    old_buffer = {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}   # saved by old transformers
    st = load_eventgpt(_save_sharded(model, tmp_path / "st", add=old_buffer), cfg=model.config, dtype=torch.float32)
    (tmp_path / "bin").mkdir()
    torch.save(official_state_dict(model), tmp_path / "bin" / "pytorch_model.bin")
    pt = load_eventgpt(tmp_path / "bin", cfg=model.config, dtype=torch.float32)
    for loaded in (st, pt):
        f2, l2 = _logits(loaded, tok)
        assert torch.equal(f2, feats) and torch.equal(l2, logits)


def test_checkpoint_key_and_path_errors(model, tmp_path):
    cfg = model.config
    drop = ("model.layers.1.mlp.up_proj.weight", "model.feature_adaptor.bias")
    with pytest.raises(KeyError, match=r"missing 2: \['model.feature_adaptor.bias', 'model.layers.1.mlp.up_proj.weight'\]"):
        load_eventgpt(_save_sharded(model, tmp_path / "miss", drop=drop), cfg=cfg)
    with pytest.raises(KeyError, match=r"unexpected 1: \['model.mm_projector.weight'\]"):
        load_eventgpt(_save_sharded(model, tmp_path / "extra", add={"model.mm_projector.weight": torch.zeros(2)}), cfg=cfg)
    with pytest.raises(KeyError, match=r"shape mismatches 1: \['model.embed_tokens.weight: file \(401, 64\)"):
        load_eventgpt(_save_sharded(model, tmp_path / "shape", shape_fix="model.embed_tokens.weight"), cfg=cfg)
    no_vision = [k for k in expected_keys(cfg) if k.startswith("model.visual_tower.")]
    with pytest.raises(KeyError, match=rf"missing {len(no_vision)}: .*Pass clip_path="):
        load_eventgpt(_save_sharded(model, tmp_path / "novis", drop=no_vision), cfg=cfg)
    with pytest.raises(FileNotFoundError, match="EventGPT checkpoint folder not found: .*nowhere"):
        load_eventgpt(tmp_path / "nowhere", cfg=cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*.safetensors or pytorch_model\*.bin"):
        load_eventgpt(tmp_path / "empty", cfg=cfg)


def test_vision_tower_from_clip_path(model, tok, tmp_path):
    no_vision = [k for k in expected_keys(model.config) if k.startswith("model.visual_tower.")]
    folder = _save_sharded(model, tmp_path / "ckpt", drop=no_vision)
    model.vision_tower.save_pretrained(tmp_path / "clip")
    loaded = load_eventgpt(folder, cfg=model.config, dtype=torch.float32, clip_path=tmp_path / "clip")
    assert torch.equal(_logits(loaded, tok)[1], _logits(model, tok)[1])


def test_config_from_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "EventChat_llama", "vocab_size": 32001,
                                                      "num_hidden_layers": 2, "rms_norm_eps": 1e-6}))
    cfg = config_from_checkpoint(tmp_path)
    assert (cfg.vocab, cfg.layers, cfg.rms_eps, cfg.hidden, cfg.vision_hidden) == (32001, 2, 1e-6, 4096, 1024)


# ----------------------------------------------------------------------------- greedy
def test_greedy_matches_full_recompute_and_stops_at_eos(model, tok):
    px = _pixels(1, seed=5)
    ids, text = generate_greedy(model, tok, px, Q, max_new_tokens=6, eos_token_id=-1)   # no stop
    assert len(ids) == 6 and isinstance(text, str)
    with torch.no_grad():                                               # reference: no cache, whole prefix each step
        embeds, table, ref = embed_prompt(model, prompt_ids(tok, Q), get_event_features(model, px)), \
            model.language_model.get_input_embeddings(), []
        for _ in range(6):
            full = torch.cat([embeds, table(torch.tensor([ref], dtype=torch.long))], dim=1) if ref else embeds
            ref.append(int(model.language_model(inputs_embeds=full).logits[0, -1].argmax()))
    assert ids == ref
    j = next((i for i in range(1, 6) if ids[i] not in ids[:i]), None)
    assert j is not None, f"degenerate random model output {ids}"
    stopped, _ = generate_greedy(model, tok, px, Q, max_new_tokens=6, eos_token_id=ids[j])
    assert stopped == ids[:j + 1]                                       # ends with the eos, nothing after it
