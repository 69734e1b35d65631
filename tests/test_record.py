"""Recording pairs at scale on the synthetic world (CPU): shards merge back in work-list order and
equal batch-1 answers, ranks partition the work, a killed run resumes and loses nothing, and an
out-of-memory batch is split and retried."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers.models import record as rec
from helpers.models import vlm
from helpers.models.shipped import SHIPPED_DIR
from helpers.world.dataset import generate_dataset, load_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("world") / "data"
    generate_dataset(d, n_clips=3, seed=5, n_workers=1, progress=False)
    return rec.work_from_manifest(load_manifest(d), n_questions=2)


def backends(batch):
    return rec.backends_for("synthetic", str(SHIPPED_DIR), batch, 12, torch.device("cpu"), False)


def test_shards_merge_in_order_and_equal_batch_one_answers(work, tmp_path):
    draft, target = backends(2)
    res = rec.record(draft, target, work, tmp_path, chunk=2, max_new_tokens=12, progress=False)
    assert res == {"written": 3, "skipped": 0, "seconds": res["seconds"]}
    pairs, _ = rec.merge(tmp_path, work, 2)
    assert [p.key for p in pairs] == [w.key for w in work]
    tok = target.tokenizer
    for p, w in zip(pairs[:2], work[:2]):
        d_in, t_in = rec.load_inputs(w)
        assert list(p.target_ids) == vlm.generate_greedy(target.model, tok, t_in, w.question, 12)[0]
        assert list(p.draft_ids) == vlm.generate_greedy(draft.model, tok, d_in, w.question, 12)[0]
        assert p.timings_ms["target_batch"] == 2.0 and p.timings_ms["draft_prefill"] > 0
    again = rec.record(draft, target, work, tmp_path, chunk=2, max_new_tokens=12, progress=False)
    assert again["written"] == 0 and again["skipped"] == 3                           # nothing redone


def test_ranks_partition_the_work_and_merge_checks_completeness(work, tmp_path):
    draft, target = backends(1)
    rec.record(draft, target, work, tmp_path, chunk=1, max_new_tokens=6, rank=0, world=2, progress=False)
    with pytest.raises(FileNotFoundError, match="shard_00001"):
        rec.merge(tmp_path, work, 1)
    rec.record(draft, target, work, tmp_path, chunk=1, max_new_tokens=6, rank=1, world=2, progress=False)
    assert len(rec.merge(tmp_path, work, 1)[0]) == len(work)
    with pytest.raises(ValueError, match="another work list"):
        rec.merge(tmp_path, work[::-1], 1)


@pytest.mark.slow
def test_a_killed_run_resumes_and_loses_nothing(work, tmp_path):
    import json
    from dataclasses import asdict
    (tmp_path / "work.json").write_text(json.dumps([asdict(w) for w in work]))
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "helpers.models.record", "--work", str(tmp_path / "work.json"), "--out", str(out),
           "--models", str(SHIPPED_DIR), "--batch", "1", "--max-new-tokens", "12", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not rec.shard_path(out, 0).exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)                                                   # killed mid-run
    p.wait()
    done = sorted(out.glob("shard_*.json"))
    assert 1 <= len(done) < len(work)
    assert all(json.loads(d.read_text()) for d in done)                            # every shard there is whole
    subprocess.run(cmd, env=env, check=True, capture_output=True)                   # same parameters: resumes
    resumed, _ = rec.merge(out, work, 1)
    draft, target = backends(1)
    rec.record(draft, target, work, tmp_path / "clean", chunk=1, max_new_tokens=12, progress=False)
    clean, _ = rec.merge(tmp_path / "clean", work, 1)
    assert [(p.draft_ids, p.target_ids) for p in resumed] == [(p.draft_ids, p.target_ids) for p in clean]


def test_out_of_memory_splits_the_batch(monkeypatch, work):
    from helpers.models import backend as be_mod
    real, calls = be_mod.generate, []

    def fake(backend, inputs, questions, max_new_tokens=50):
        calls.append(len(questions))
        if len(questions) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(backend, inputs, questions, max_new_tokens)

    monkeypatch.setattr(be_mod, "generate", fake)
    draft, _ = backends(4)
    logs = []
    ins = [rec.load_inputs(w)[0] for w in work[:4]]
    out = rec._generate_split(draft, ins, [w.question for w in work[:4]], 6, logs.append)
    assert len(out) == 4 and calls == [4, 2, 1, 1, 2, 1, 1]
    assert logs[0] == "CUDA out of memory on a batch of 4: retrying as 2 + 2"


def test_real_clips_record_through_the_same_path(work, tmp_path):
    """Work from real clips (EventGPT .npy events of DSEC, a frame-folder video) is recorded like
    the synthetic world's: the draft sees the clip's event image, the target 8 sampled frames."""
    from PIL import Image

    from conftest import require_shared
    from helpers.models.clips import ClipItem, EventSource, event_images, load_event_source
    from helpers.suite.paths import SHARED_DATA
    npy = require_shared(SHARED_DATA / "dsec_events" / "interlaken_00_d_000099.npy")
    frames = tmp_path / "frames"
    frames.mkdir()
    _, video = rec.load_inputs(work[0])                              # 8 frames of a synthetic clip as a stand-in
    for i, f in enumerate(video):
        Image.fromarray(f).save(frames / f"{i:06d}.png")
    items = [ClipItem("interlaken_00_d_000099", q, text, EventSource(str(npy)), str(frames))
             for q, text in enumerate(["What are the key elements in this scene?", "Describe the road."])]
    w = rec.work_from_clips(items)
    assert [x.key for x in w] == ["interlaken_00_d_000099/q0", "interlaken_00_d_000099/q1"]
    ev_img, vid = rec.load_inputs(w[0])
    assert (ev_img == event_images(load_event_source(EventSource(str(npy))))[0]).all() and ev_img.dtype.name == "uint8"
    assert vid.shape[0] == 8 and (vid == video).all()
    draft, target = backends(2)
    rec.record(draft, target, w, tmp_path / "shards", chunk=2, max_new_tokens=8, progress=False)
    pairs, raw = rec.merge(tmp_path / "shards", w, 2)
    assert [p.key for p in pairs] == [x.key for x in w] and raw[0]["events"]["path"] == str(npy)
    assert list(pairs[0].draft_ids) == vlm.generate_greedy(draft.model, draft.tokenizer, ev_img, w[0].question, 8)[0]


def test_real_checkpoint_folders_record_and_bad_paths_say_what_to_pass(work, tmp_path):
    """Kind 'real': an EventGPT folder in the official layout (a tiny random one, written by
    save_eventgpt) and a Video-LLaVA folder in transformers' layout (the shipped world target, the
    same class) load from local paths and record pairs through the same recorder; the draft's
    answers are EventGPT's own greedy answers. Missing or absent folders fail before any work."""
    from helpers.models import eventgpt
    from helpers.models.tokenizer import load_tokenizer
    tok = load_tokenizer(SHIPPED_DIR / "tokenizer")
    torch.manual_seed(0)
    tiny = eventgpt.build_eventgpt(eventgpt.EventGPTConfig.tiny(vocab=len(tok)))
    ck = rec.Checkpoints(draft=str(eventgpt.save_eventgpt(tiny, tmp_path / "EventGPT-7b", tok)),
                         target=str(SHIPPED_DIR / "target"))
    draft, target = rec.backends_for("real", json.dumps(dataclasses.asdict(ck)), 2, 8, torch.device("cpu"), False)
    assert type(draft.model).__name__ == "EventGPT" and type(target.model).__name__ == "VideoLlavaForConditionalGeneration"
    for a, b in zip(draft.model.state_dict().values(), tiny.state_dict().values()):
        assert torch.equal(a, b)                                          # every weight came back from the folder
    w = work[:3]
    res = rec.launch(w, tmp_path / "shards", "real", ck, 2, 8, gpus=0, progress=False)
    assert res["written"] == 2
    pairs, _ = rec.merge(tmp_path / "shards", w, 2)
    ev_img, frames = rec.load_inputs(w[2])
    pixels = draft.adapter.pixels(ev_img)                                  # (1, 3, 336, 336): one event image
    assert pixels.shape == (1, 3, 336, 336)
    assert list(pairs[2].draft_ids) == eventgpt.generate_greedy(tiny, tok, pixels, w[2].question, 8)[0]
    assert list(pairs[2].target_ids) == vlm.generate_greedy(target.model, target.tokenizer, frames, w[2].question, 8)[0]

    # a target folder with its own processor configuration (as Video-LLaVA-7B-hf has): the frames go
    # through the checkpoint's VideoLlavaVideoProcessor, not the suite's CLIP steps
    import shutil

    from transformers import VideoLlavaVideoProcessor
    folder = shutil.copytree(SHIPPED_DIR / "target", tmp_path / "Video-LLaVA-7B-hf")
    px = target.model.config.vision_config.image_size
    proc = VideoLlavaVideoProcessor(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    proc.save_pretrained(str(folder))
    _, with_proc = rec.backends_for("real", rec.Checkpoints(ck.draft, str(folder)), 1, 8, torch.device("cpu"), False)
    want = proc(videos=[frames], return_tensors="pt")["pixel_values_videos"][0]
    assert torch.equal(with_proc.adapter.pixels(frames), want)
    assert rec.load_models("real", ck, "cpu").target_adapter.pixels(frames).shape == want.shape   # suite's steps
    with pytest.raises(ValueError, match=r"no draft checkpoint given: pass the EventGPT-7B checkpoint folder \(draft_checkpoint\)"):
        rec.launch(w, tmp_path / "s2", "real", {"draft": "", "target": ck.target}, 2, 8, gpus=0)
    with pytest.raises(FileNotFoundError, match="target checkpoint not found: .*nowhere .*Video-LLaVA-7B-hf"):
        rec.launch(w, tmp_path / "s2", "real", {"draft": ck.draft, "target": str(tmp_path / "nowhere")}, 2, 8, gpus=0)
    with pytest.raises(ValueError, match=r"unknown checkpoint fields \['clip'\]"):
        rec.Checkpoints.parse({"draft": ck.draft, "target": ck.target, "clip": "x"})
    with pytest.raises(ValueError, match="unknown backend kind 'llava'"):
        rec.backends_for("llava", ck, 1, 8, torch.device("cpu"), False)
