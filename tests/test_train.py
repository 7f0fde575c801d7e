"""Multi-process and fault tests of k2ssl_lit.train: a 2-process torchrun gloo run sees disjoint batches;
k steps + resume + k steps equals 2k steps straight; a worker SIGKILLed under --max-restarts=1 resumes from the last
checkpoint with no batch lost; a process killed during a checkpoint write leaves the previous one loadable; a
checkpoint holding a pickled object is refused. CPU, tiny model, random labels; each test runs in seconds."""
import json, os, signal, subprocess, sys, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from k2ssl_lit.core import num_frames
from k2ssl_lit.corpus import cached_corpus
from k2ssl_lit.data import attach_labels, corpus_cuts, make_sampler
from k2ssl_lit.optim import OptimConfig
from k2ssl_lit.presets import ModelConfig, load_checkpoint, load_pretrained
from k2ssl_lit.train import TrainConfig, latest_checkpoint, open_cuts, train

ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
MAX_DURATION, NUM_BUCKETS = 20.0, 10


def _cfg(manifest, exp, **kw) -> TrainConfig:
    optim = OptimConfig(base_lr=0.02, warmup_batches=3, lr_batches=100, lr_epochs=10, ref_duration=MAX_DURATION)
    base = dict(preset="zipformer_tiny", num_classes=20, train_cuts=str(manifest), exp_dir=str(exp), max_samples=16_000,
                max_duration=MAX_DURATION, accum_grad=1, num_buckets=NUM_BUCKETS, optim=optim, log_every=1, progress=False,
                log_batches=True, device="cpu")
    return TrainConfig(**(base | kw))


def _torchrun(cfg_path, nproc=2, max_restarts=0, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max_restarts}", "--monitor-interval=0.2", "-m", "k2ssl_lit.train", "--config", str(cfg_path)]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _batch_log(exp, rank):
    path = Path(exp) / "batches" / f"rank{rank}.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def _expected(manifest, rank, world_size, steps):
    "The first `steps` batches (cut ids) that `rank` must train, straight from the sampler."
    sampler = make_sampler(open_cuts(manifest), MAX_DURATION, NUM_BUCKETS, seed=0, world_size=world_size, rank=rank)
    out, epoch = [], 0
    while len(out) < steps:
        sampler.set_epoch(epoch)
        out += [[c.id for c in b] for b in sampler]
        epoch += 1
    return out[:steps]


def test_two_ranks_disjoint(manifest, tmp_path):
    "(a) torchrun, 2 gloo processes: finishes, ranks train disjoint batches, exactly the sampler's per-rank batches."
    cfg = _cfg(manifest, tmp_path / "exp", max_steps=3)
    cfg.save(tmp_path / "cfg.yaml")
    p = _torchrun(tmp_path / "cfg.yaml")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out[-3000:]
    logs = [_batch_log(cfg.exp_dir, r) for r in (0, 1)]
    ids = [[e["cut_ids"] for e in log] for log in logs]
    assert [len(x) for x in ids] == [3, 3]
    seen = [{c for b in x for c in b} for x in ids]
    assert not seen[0] & seen[1], "the two ranks trained the same cut in the same epoch"
    for r in (0, 1): assert ids[r] == _expected(manifest, r, 2, 3)
    start = [json.loads(l) for l in (Path(cfg.exp_dir) / "log.jsonl").read_text().splitlines()][0]
    assert start["kind"] == "start" and start["world_size"] == 2
    model = load_pretrained(latest_checkpoint(cfg.exp_dir)[0])  # the training checkpoint is a model file
    assert model.config.encoder == "zipformer"


def _straight_and_resumed(make_cfg, manifest, tmp_path, k: int):
    "2k steps straight; k steps, then a resumed run to 2k; on 8 cuts (3 batches per epoch: 2k crosses an epoch)."
    small = tmp_path / "small.jsonl.gz"
    open_cuts(manifest).subset(first=8).to_eager().to_file(small)
    kw = dict(train_cuts=str(small), num_buckets=4, checkpoint_every=100, max_epochs=5)
    a = train(make_cfg(manifest, tmp_path / "straight", max_steps=2 * k, **kw))
    b1 = train(make_cfg(manifest, tmp_path / "resumed", max_steps=k, **kw))
    b2 = train(make_cfg(manifest, tmp_path / "resumed", max_steps=2 * k, **kw))
    return a, b1, b2


def test_resume_equals_straight(manifest, tmp_path):
    "(b) 2k steps straight == k steps, stop, resume, k more: same batches, parameters within 1e-6 (fp32)."
    k = 3
    a, b1, b2 = _straight_and_resumed(_cfg, manifest, tmp_path, k)
    assert (a["steps"], b1["steps"], b2["steps"]) == (2 * k, k, 2 * k)
    assert b2["resumed_from"].endswith(f"step-{k:08d}.pt")
    assert a["epochs"] >= 1, "the run should cross an epoch boundary"
    straight, resumed = _batch_log(tmp_path / "straight", 0), _batch_log(tmp_path / "resumed", 0)
    assert [e["cut_ids"] for e in resumed] == [e["cut_ids"] for e in straight]
    assert [(e["step"], e["epoch"]) for e in resumed] == [(e["step"], e["epoch"]) for e in straight]
    pa, pb = load_checkpoint(a["last_checkpoint"])["model"], load_checkpoint(b2["last_checkpoint"])["model"]
    assert pa.keys() == pb.keys()
    diff = max(float((pa[n].float() - pb[n].float()).abs().max()) for n in pa)
    assert diff <= 1e-6, diff
    oa, ob = load_checkpoint(a["last_checkpoint"])["optimizer"], load_checkpoint(b2["last_checkpoint"])["optimizer"]
    for ca, cb in zip(oa["clip_state"], ob["clip_state"], strict=True):
        assert ca["norms"] == pytest.approx(cb["norms"], rel=1e-6) and ca["step"] == cb["step"]


def test_resume_with_accumulation_and_held_model_clock(manifest, tmp_path, monkeypatch):
    """Exact resume when a step accumulates 2 micro-batches and the model's clock is held for 3 steps (the resume
    lands between two refreshes); the clocks match a hand computation: Eden at the step index, the model clock at
    (step - step_in_epoch % 3) x accum x max_duration / ref_duration."""
    import k2ssl_lit.train as train_mod
    from k2ssl_lit.optim import eden_lr
    seen, real = [], train_mod.set_batch_count
    monkeypatch.setattr(train_mod, "set_batch_count", lambda m, c: (seen.append(c), real(m, c))[1])
    small = tmp_path / "small.jsonl.gz"
    open_cuts(manifest).subset(first=24).to_eager().to_file(small)
    kw = dict(train_cuts=str(small), num_buckets=4, checkpoint_every=100, max_epochs=5, accum_grad=2, model_clock_every=3)
    a = train(_cfg(manifest, tmp_path / "straight", max_steps=8, **kw))
    straight_clock, seen[:] = list(seen), []
    b1 = train(_cfg(manifest, tmp_path / "resumed", max_steps=4, **kw))
    b2 = train(_cfg(manifest, tmp_path / "resumed", max_steps=8, **kw))
    assert b2["resumed_from"].endswith("step-00000004.pt") and seen == straight_clock
    pa, pb = load_checkpoint(a["last_checkpoint"])["model"], load_checkpoint(b2["last_checkpoint"])["model"]
    assert max(float((pa[n].float() - pb[n].float()).abs().max()) for n in pa) <= 1e-6
    log = _batch_log(tmp_path / "straight", 0)
    assert len(log) == len(straight_clock) >= 15  # 8 steps of 2 micro-batches; an epoch may end with a short step
    first = {}
    for e in log: first.setdefault(e["epoch"], e["step"])
    expected = [(e["step"] - (e["step"] - first[e["epoch"]]) % 3) * 2 * MAX_DURATION / MAX_DURATION for e in log]
    assert straight_clock == expected
    o = _cfg(manifest, tmp_path / "x").optim
    for h in a["history"]:
        assert h["lr"] == pytest.approx(eden_lr(h["step"], h["epoch"], o.base_lr, lr_batches=o.lr_batches,
                                                lr_epochs=o.lr_epochs, warmup_batches=o.warmup_batches), rel=1e-12)


def test_worker_killed_restarts_from_checkpoint(manifest, tmp_path):
    "(c) SIGKILL rank 1 mid-epoch under --max-restarts=1: the run completes; batches = the straight sequence."
    steps, every = 6, 2
    cfg = _cfg(manifest, tmp_path / "exp", max_steps=steps, checkpoint_every=every, keep_last=10)
    cfg.save(tmp_path / "cfg.yaml")
    p = _torchrun(tmp_path / "cfg.yaml", max_restarts=1)
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and p.poll() is None:
        log = _batch_log(cfg.exp_dir, 1)
        if log and log[-1]["step"] >= 3 and log[-1]["restart"] == 0:
            killed = log[-1]; os.kill(killed["pid"], signal.SIGKILL)
        time.sleep(0.05)
    out, _ = p.communicate(timeout=180)
    assert killed is not None, "rank 1 never reached step 3\n" + out[-3000:]
    assert p.returncode == 0, out[-3000:]
    for r in (0, 1):
        log = _batch_log(cfg.exp_dir, r)
        first = [e for e in log if e["restart"] == 0]
        second = [e for e in log if e["restart"] == 1]
        assert second, f"rank {r} did not restart"
        resumed_at = second[0]["step"]
        assert resumed_at % every == 0 and resumed_at <= killed["step"], (resumed_at, killed["step"])
        kept = [e["cut_ids"] for e in first if e["step"] < resumed_at]
        redone = [e["cut_ids"] for e in first if e["step"] >= resumed_at]
        after = [e["cut_ids"] for e in second]
        assert kept + after == _expected(manifest, r, 2, steps), f"rank {r}: batches lost or repeated"
        assert after[: len(redone)] == redone  # only the batches after the checkpoint were trained again
    ckpt = load_checkpoint(latest_checkpoint(cfg.exp_dir)[0])
    assert ckpt["state"]["step"] == steps and len(ckpt["rng"]) == 2


KILL_DURING_SAVE = """
import os, signal, sys
import k2ssl_lit.presets as presets
from k2ssl_lit.train import TrainConfig, train
real_replace = os.replace
def dying_replace(src, dst):
    if str(dst).endswith("step-00000004.pt"): os.kill(os.getpid(), signal.SIGKILL)  # temp file written, not renamed
    return real_replace(src, dst)
presets.os.replace = dying_replace
train(TrainConfig.load(sys.argv[1]))
"""


def test_kill_during_checkpoint_write(manifest, tmp_path):
    "(d) SIGKILL between writing the temporary file and the rename: the previous checkpoint loads; resume works."
    cfg = _cfg(manifest, tmp_path / "exp", max_steps=6, checkpoint_every=2, keep_last=5)
    cfg.save(tmp_path / "cfg.yaml")
    p = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path / "cfg.yaml")], env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    ckdir = Path(cfg.exp_dir) / "checkpoints"
    assert [f.name for f in sorted(ckdir.glob("step-*.pt"))] == ["step-00000002.pt"]
    stale = list(ckdir.glob(".step-00000004.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # the interrupted write
    path, ckpt = latest_checkpoint(cfg.exp_dir)
    assert path.name == "step-00000002.pt" and ckpt["state"]["step"] == 2
    load_pretrained(path)
    res = train(cfg)  # resumes from step 2 and cleans up
    assert res["resumed_from"].endswith("step-00000002.pt") and res["steps"] == 6
    assert not list(ckdir.glob("*.tmp"))


def test_pickled_checkpoint_refused(tmp_path):
    "(e) a checkpoint with a pickled object is refused with a clear message, and skipped when resuming."
    ckdir = tmp_path / "exp" / "checkpoints"; ckdir.mkdir(parents=True)
    torch.save({"model": {}, "payload": ModelConfig()}, ckdir / "step-00000001.pt")
    with pytest.raises(ValueError, match="refusing to load .*step-00000001.pt"):
        load_checkpoint(ckdir / "step-00000001.pt")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert latest_checkpoint(tmp_path / "exp") is None
    assert any("skipping unreadable checkpoint" in str(x.message) for x in w)


def test_console_script_help():
    "k2ssl-pretrain is installed, takes dashed options, and says what is missing."
    exe = Path(sys.executable).parent / "k2ssl-pretrain"
    p = subprocess.run([str(exe), "--max-steps", "1"], env=ENV, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "give train_cuts" in p.stderr
