"""The trainer with MT4SSL's EMA teacher (objective "mt4ssl"): k steps + resume + k steps equals 2k steps straight,
student and teacher alike, with the EMA step restored; two torchrun gloo ranks keep identical teachers (under bf16 autocast); the
`k2ssl-pretrain --objective mt4ssl` flag reaches the model and the checkpoint. CPU, tiny model, random labels."""
import json, math, os, subprocess, sys
from pathlib import Path

import torch

from k2ssl_lit.presets import load_checkpoint, load_pretrained
from k2ssl_lit.train import TrainConfig, latest_checkpoint

from test_train import ENV, _cfg as _kmeans_cfg, _straight_and_resumed


def _cfg(manifest, exp, **kw) -> TrainConfig:
    return _kmeans_cfg(manifest, exp, **({"objective": "mt4ssl"} | kw))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n].float() - b[n].float()).abs().max()) for n in a)


def test_resume_with_teacher_equals_straight(manifest, tmp_path):
    "2k steps straight == k steps, stop, resume, k more: student, teacher, EMA step and losses (fp32)."
    k = 3
    a, b1, b2 = _straight_and_resumed(_cfg, manifest, tmp_path, k)
    assert b2["resumed_from"].endswith(f"step-{k:08d}.pt") and b2["steps"] == 2 * k
    ca, cb = load_checkpoint(a["last_checkpoint"]), load_checkpoint(b2["last_checkpoint"])
    assert ca["ema_step"] == cb["ema_step"] == 2 * k and int(cb["teacher"]["num_updates"]) == 2 * k
    assert load_checkpoint(b1["last_checkpoint"])["ema_step"] == k
    assert _max_diff(ca["model"], cb["model"]) <= 1e-6
    assert _max_diff(ca["teacher"], cb["teacher"]) <= 1e-6
    assert _max_diff(ca["teacher"], {"encoder." + n[len("encoder."):]: v for n, v in ca["model"].items()
                                     if n.startswith("encoder.")} | {"num_updates": ca["teacher"]["num_updates"]}) > 0
    tail = [(h["loss"], h["online_loss"], h["ema_decay"]) for h in a["history"][k:]]
    assert tail == [(h["loss"], h["online_loss"], h["ema_decay"]) for h in b2["history"]]
    model = load_pretrained(b2["last_checkpoint"])  # an ordinary model file: evaluation needs no teacher
    assert model.config.ssl.objective == "mt4ssl"


def test_two_ranks_keep_identical_teachers(manifest, tmp_path):
    """torchrun, 2 gloo processes (each initialises from its own seed), bf16 autocast: the teachers agree after DDP's
    broadcast and 2 EMA steps, and the losses are finite."""
    cfg = _cfg(manifest, tmp_path / "exp", max_steps=2, log_batches=False, precision="bf16")
    cfg.save(tmp_path / "cfg.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "k2ssl_lit.train",
           "--config", str(tmp_path / "cfg.yaml")]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    ckpt = load_checkpoint(latest_checkpoint(cfg.exp_dir)[0])
    sums = ckpt["teacher_rank_sums"]
    assert len(sums) == 2 and sums[0] == sums[1], sums
    assert ckpt["ema_step"] == 2 and len(ckpt["rng"]) == 2
    log = [json.loads(l) for l in (Path(cfg.exp_dir) / "log.jsonl").read_text().splitlines()]
    train_entries = [e for e in log if e["kind"] == "train"]
    assert len(train_entries) == 2 and all(math.isfinite(e["loss"]) and e["online_loss"] > 0 for e in train_entries)


def test_cli_objective_flag(manifest, tmp_path):
    "`k2ssl-pretrain --objective mt4ssl --ema-anneal-updates 1200`: the model, the checkpoint and the summary say so."
    exe = Path(sys.executable).parent / "k2ssl-pretrain"
    opts = ["--preset", "zipformer_tiny", "--num-classes", "20", "--train-cuts", str(manifest), "--max-duration", "20",
            "--max-steps", "1", "--accum-grad", "1", "--device", "cpu", "--set", "max_samples=16000,progress=false"]
    p = subprocess.run([str(exe), *opts, "--exp-dir", str(tmp_path / "mt"), "--objective", "mt4ssl",
                        "--ema-anneal-updates", "1200"], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout[p.stdout.index("{"):])
    assert (summary["objective"], summary["ema_step"]) == ("mt4ssl", 1)
    ckpt = load_checkpoint(summary["last_checkpoint"])
    assert ckpt["model_config"]["ssl"]["online"]["ema_anneal_updates"] == 1200 and ckpt["ema_step"] == 1
    p = subprocess.run([str(exe), *opts, "--exp-dir", str(tmp_path / "bad"), "--objective", "online"], env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "objective must be one of" in p.stderr
    # the default stays k-means only, with no teacher in the checkpoint
    p = subprocess.run([str(exe), *opts, "--exp-dir", str(tmp_path / "km")], env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout[p.stdout.index("{"):])
    assert (summary["objective"], summary["ema_step"]) == ("kmeans", None)
    assert "teacher" not in load_checkpoint(summary["last_checkpoint"])
