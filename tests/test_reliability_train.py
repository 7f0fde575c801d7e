"""What `train` / `k2ssl-pretrain` guarantee when the input, the experiment folder or the process misbehave:
options and labels are checked before any file is written; a --fresh run moves an older run aside and rotation never
deletes another run's checkpoints; unreadable checkpoints, a changed model and audio that cannot be loaded stop the
run with a one-line error; SIGTERM saves a checkpoint at the next step and a restart continues exactly.
CPU, tiny model, random labels."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet

from k2ssl_lit.core import num_frames
from k2ssl_lit.corpus import cached_corpus
from k2ssl_lit.data import InputError, attach_labels, corpus_cuts, cut_labels
from k2ssl_lit.optim import OptimConfig
from k2ssl_lit.presets import load_checkpoint
from k2ssl_lit.train import (TrainConfig, checkpoint_paths, open_cuts, pretrain_cli, save_checkpoint, train)

ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cfg(manifest, exp, **kw) -> TrainConfig:
    optim = OptimConfig(base_lr=0.02, warmup_batches=3, lr_batches=100, lr_epochs=10, ref_duration=20.0)
    base = dict(preset="zipformer_tiny", num_classes=20, train_cuts=str(manifest), exp_dir=str(exp), max_samples=16_000,
                max_duration=20.0, accum_grad=1, num_buckets=10, optim=optim, log_every=1, progress=False, device="cpu")
    return TrainConfig(**(base | kw))


def _write(cuts, path) -> Path:
    CutSet.from_cuts(cuts).to_file(path)
    return path


def _missing_audio(cut):
    d = cut.to_dict(); src = d["recording"]["sources"][0]
    src["source"] = "/nonexistent/" + Path(src["source"]).name
    return CutSet.from_dicts([d])[0]


def _cli_error(**kw) -> str:
    "The message of pretrain_cli's SystemExit (called as a function)."
    with pytest.raises(SystemExit) as e: pretrain_cli(**kw)
    assert isinstance(e.value.code, str), e.value.code
    return e.value.code


# --- 1. options and labels checked before anything is written ---------------------------------------------------

@pytest.mark.parametrize("opt, value, name", [("max_duration", 0.0, "max_duration"), ("max_duration", -5.0, "max_duration"),
                                              ("num_classes", 0, "num_classes")])
def test_bad_option_is_one_line_before_files(manifest, tmp_path, opt, value, name):
    msg = _cli_error(train_cuts=str(manifest), exp_dir=str(tmp_path / "exp"), **{opt: value})
    assert msg.startswith(f"k2ssl-pretrain: {name} must be") and "\n" not in msg
    assert not (tmp_path / "exp").exists()


def test_checkpoint_every_zero(manifest, tmp_path):
    "Once a ZeroDivisionError at the first step, after train.yaml was written."
    msg = _cli_error(train_cuts=str(manifest), exp_dir=str(tmp_path / "exp"), set="checkpoint_every=0", max_steps=2)
    assert msg == "k2ssl-pretrain: checkpoint_every must be >= 1, got 0"
    assert not (tmp_path / "exp").exists()


def test_cli_exit_status_and_one_line(manifest, tmp_path):
    exe = Path(sys.executable).parent / "k2ssl-pretrain"
    p = subprocess.run([str(exe), "--train-cuts", str(manifest), "--exp-dir", str(tmp_path / "exp"), "--max-duration", "-5"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("k2ssl-pretrain: max_duration must be > 0")


def test_labels_checked_before_training(manifest, tmp_path):
    "A cut 10 frames short, or without labels, in the middle of the manifest: named before a file is written."
    cuts = list(open_cuts(manifest))
    short = cuts[20]; short.custom["kmeans"] = cut_labels(short)[:-10].tolist()
    bad = _write(cuts, tmp_path / "short.jsonl.gz")
    msg = _cli_error(train_cuts=str(bad), exp_dir=str(tmp_path / "exp"), num_classes=20, max_steps=1)
    assert repr(short.id) in msg and "\n" not in msg and not (tmp_path / "exp").exists()
    cuts = list(open_cuts(manifest)); del cuts[30].custom["kmeans"]
    msg = _cli_error(train_cuts=str(_write(cuts, tmp_path / "unlabelled.jsonl.gz")), exp_dir=str(tmp_path / "exp"),
                     num_classes=20, max_steps=1)
    assert repr(cuts[30].id) in msg and "no labels" in msg and not (tmp_path / "exp").exists()
    with pytest.raises(InputError, match="num_classes=10"):  # ids up to 19 for a 10-class model
        train(_cfg(manifest, tmp_path / "exp", num_classes=10, max_steps=1))
    assert not (tmp_path / "exp").exists()


def test_empty_and_truncated_manifests(manifest, tmp_path):
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    raw = manifest.read_bytes(); (tmp_path / "half.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    assert "holds no cuts" in _cli_error(train_cuts=str(tmp_path / "empty.jsonl.gz"), exp_dir=str(tmp_path / "exp"))
    msg = _cli_error(train_cuts=str(tmp_path / "half.jsonl.gz"), exp_dir=str(tmp_path / "exp"))
    assert "half.jsonl.gz" in msg and "truncated" in msg and "\n" not in msg
    assert "does not exist" in _cli_error(train_cuts=str(tmp_path / "nope.jsonl.gz"), exp_dir=str(tmp_path / "exp"))
    msg = _cli_error(train_cuts=str(manifest), dev_cuts=str(tmp_path / "empty.jsonl.gz"), exp_dir=str(tmp_path / "exp"),
                     num_classes=20)
    assert msg.startswith("k2ssl-pretrain: dev manifest")
    assert not (tmp_path / "exp").exists()


def test_duration_limits_applied_and_reported(manifest, tmp_path):
    durations = {c.id: c.duration for c in open_cuts(manifest)}
    short, long = sum(d < 4 for d in durations.values()), sum(d > 10 for d in durations.values())
    assert short and long
    cfg = _cfg(manifest, tmp_path / "exp", min_cut_duration=4.0, max_cut_duration=10.0, max_epochs=1, log_batches=True)
    res = train(cfg)
    assert res["data"]["train"] == dict(cuts=45, removed_too_short=short, removed_too_long=long, kept=45 - short - long)
    trained = [i for l in (tmp_path / "exp/batches/rank0.jsonl").read_text().splitlines() for i in json.loads(l)["cut_ids"]]
    assert sorted(trained) == sorted(i for i, d in durations.items() if 4 <= d <= 10)
    start = json.loads((tmp_path / "exp/log.jsonl").read_text().splitlines()[0])
    assert start["data"]["train"]["removed_too_short"] == short
    assert res["cuts_seen"] == 45 - short - long and res["cuts_skipped"] == 0


# --- 2. an experiment folder holds one run -----------------------------------------------------------------------

def test_fresh_moves_the_old_run_aside(manifest, tmp_path):
    exp = tmp_path / "exp"
    train(_cfg(manifest, exp, max_steps=6, checkpoint_every=1, keep_last=2))
    res = train(_cfg(manifest, exp, max_steps=2, checkpoint_every=1, keep_last=2, resume=False))
    assert Path(res["last_checkpoint"]).name == "step-00000002.pt"
    assert [p.name for p in checkpoint_paths(exp)] == ["step-00000001.pt", "step-00000002.pt"]
    moved = Path(res["moved_aside"])
    assert moved.parent == exp and moved.name.startswith("previous-")
    assert [p.name for p in checkpoint_paths(moved)] == ["step-00000005.pt", "step-00000006.pt"]
    assert load_checkpoint(checkpoint_paths(moved)[-1])["state"]["step"] == 6
    log = [json.loads(l) for l in (exp / "log.jsonl").read_text().splitlines()]
    assert log[0]["kind"] == "start" and log[0]["moved_aside"] == str(moved)
    again = train(_cfg(manifest, exp, max_steps=3, checkpoint_every=1, keep_last=2))
    assert again["resumed_from"].endswith("step-00000002.pt") and again["steps"] == 3


def test_fresh_under_a_torchrun_restart_resumes(manifest, tmp_path, monkeypatch):
    "torchrun restarting a --fresh run after a failure: the checkpoints are this run's, so the restart resumes."
    exp = tmp_path / "exp"
    train(_cfg(manifest, exp, max_steps=2, checkpoint_every=1, resume=False))
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    res = train(_cfg(manifest, exp, max_steps=3, checkpoint_every=1, resume=False))
    assert res["resumed_from"].endswith("step-00000002.pt") and res["moved_aside"] is None and res["steps"] == 3


def test_rotation_never_deletes_later_steps(tmp_path):
    for s in (10, 20): save_checkpoint({"step": s}, tmp_path, s, keep_last=1)
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["step-00000020.pt"]
    save_checkpoint({"step": 5}, tmp_path, 5, keep_last=1)
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["step-00000005.pt", "step-00000020.pt"]


def test_all_checkpoints_unreadable_stops(manifest, tmp_path):
    ck = tmp_path / "exp" / "checkpoints"; ck.mkdir(parents=True)
    for s in (4, 8): (ck / f"step-{s:08d}.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="skipping unreadable"), pytest.raises(InputError) as e:
        train(_cfg(manifest, tmp_path / "exp", max_steps=2, checkpoint_every=1))
    assert "step-00000004.pt" in str(e.value) and "step-00000008.pt" in str(e.value) and "--fresh" in str(e.value)
    assert sorted(p.name for p in ck.iterdir()) == ["step-00000004.pt", "step-00000008.pt"]
    assert not (tmp_path / "exp" / "train.yaml").exists()


# --- 4. resume with other settings ---------------------------------------------------------------------------------

def test_resume_with_another_preset_refused(manifest, tmp_path):
    exp = tmp_path / "exp"
    train(_cfg(manifest, exp, max_steps=1))
    before = (exp / "train.yaml").read_text()
    with pytest.raises(InputError) as e:
        train(_cfg(manifest, exp, max_steps=2, preset="hubert_tiny"))
    assert "encoder: 'zipformer' -> 'hubert'" in str(e.value) and "--fresh" in str(e.value)
    assert (exp / "train.yaml").read_text() == before


# --- 3. a run that trains on nothing fails -----------------------------------------------------------------------

def test_all_audio_missing_fails_without_checkpoints(manifest, tmp_path):
    gone = _write([_missing_audio(c) for c in open_cuts(manifest)], tmp_path / "gone.jsonl.gz")
    msg = _cli_error(train_cuts=str(gone), exp_dir=str(tmp_path / "exp"), num_classes=20, max_duration=20.0,
                     set="max_samples=16000,progress=false", device="cpu")
    assert "45 of the 45 cuts seen (100%) had unusable audio" in msg and "/nonexistent/" in msg
    assert checkpoint_paths(tmp_path / "exp") == []


def test_skipped_share_counted_and_limited(manifest, tmp_path):
    cuts = list(open_cuts(manifest))
    for i in (3, 17, 40): cuts[i] = _missing_audio(cuts[i])  # 3 of 45: 6.7 %
    some = _write(cuts, tmp_path / "some.jsonl.gz")
    with pytest.raises(InputError, match=r"3 of the 45 cuts seen \(7%\)"):
        train(_cfg(some, tmp_path / "a", max_epochs=1))
    assert checkpoint_paths(tmp_path / "a") == []
    res = train(_cfg(some, tmp_path / "b", max_epochs=1, max_skipped=0.1))
    assert (res["cuts_seen"], res["cuts_skipped"]) == (45, 3)
    end = json.loads((tmp_path / "b/log.jsonl").read_text().splitlines()[-1])
    assert end["kind"] == "end" and end["cuts_skipped"] == 3


# --- 5. SIGTERM ----------------------------------------------------------------------------------------------------

def _batch_steps(exp, rank=0):
    p = Path(exp) / "batches" / f"rank{rank}.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []


def _wait_and_signal(proc, exp, rank, at_step, sig=signal.SIGTERM, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        log = _batch_steps(exp, rank)
        if log and log[-1]["step"] >= at_step:
            os.kill(log[-1]["pid"], sig); return log[-1]
        time.sleep(0.02)
    raise AssertionError("the run never reached step %d\n%s" % (at_step, proc.communicate()[0][-3000:]))


def test_sigterm_saves_and_resumes_exactly(manifest, tmp_path):
    kw = dict(checkpoint_every=1000, max_epochs=20, log_batches=True)
    cfg = _cfg(manifest, tmp_path / "stopped", max_steps=60, **kw)
    cfg.save(tmp_path / "cfg.yaml")
    p = subprocess.Popen([sys.executable, "-m", "k2ssl_lit.train", "--config", str(tmp_path / "cfg.yaml")], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_and_signal(p, cfg.exp_dir, 0, at_step=2)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "Traceback" not in out
    summary = json.loads(out[out.index("{"):])
    assert summary["stopped"] == "interrupted" and summary["signal"] == "SIGTERM"
    stopped_at = summary["steps"]
    assert 3 <= stopped_at < 60 and Path(summary["last_checkpoint"]).name == f"step-{stopped_at:08d}.pt"
    assert _batch_steps(cfg.exp_dir)[-1]["step"] == stopped_at - 1  # the step under way was finished, no later one
    n = stopped_at + 2
    # the interrupted part ran with one thread (ENV); float sums differ with the thread count, so match it
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        resumed = train(_cfg(manifest, tmp_path / "stopped", max_steps=n, **kw))
        straight = train(_cfg(manifest, tmp_path / "straight", max_steps=n, **kw))
    finally: torch.set_num_threads(threads)
    assert resumed["resumed_from"].endswith(f"step-{stopped_at:08d}.pt")
    ids = lambda exp: [e["cut_ids"] for e in _batch_steps(exp)]
    assert ids(tmp_path / "stopped") == ids(tmp_path / "straight")
    pa, pb = (load_checkpoint(r["last_checkpoint"])["model"] for r in (resumed, straight))
    assert max(float((pa[k].float() - pb[k].float()).abs().max()) for k in pa) <= 1e-6


def test_sigterm_to_one_rank_under_torchrun(manifest, tmp_path):
    "SIGTERM to rank 1 only: both ranks stop after the same step (the flag rides the step's all-reduce); rank 0 saves."
    cfg = _cfg(manifest, tmp_path / "exp", max_steps=60, checkpoint_every=1000, max_epochs=20, log_batches=True)
    cfg.save(tmp_path / "cfg.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=0",
           "--monitor-interval=0.2", "-m", "k2ssl_lit.train", "--config", str(tmp_path / "cfg.yaml")]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_and_signal(p, cfg.exp_dir, 1, at_step=2)
    out, _ = p.communicate(timeout=180)
    last = [_batch_steps(cfg.exp_dir, r)[-1]["step"] for r in (0, 1)]
    assert last[0] == last[1], (last, out[-3000:])
    ckpts = checkpoint_paths(cfg.exp_dir)
    assert ckpts and ckpts[-1].name == f"step-{last[0] + 1:08d}.pt", out[-3000:]
    ck = load_checkpoint(ckpts[-1])
    assert ck["state"]["step"] == last[0] + 1 and len(ck["rng"]) == 2
    assert "k2ssl_lit/train.py" not in out, out[-3000:]  # no worker traceback (torchrun reports the exit codes)
    assert "exitcode" in out and "143" in out, out[-3000:]  # both ranks ended with 128 + SIGTERM
