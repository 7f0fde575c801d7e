"""The pipeline end to end through its console scripts, as a user runs it: corpus -> MFCC k-means -> pre-train ->
k-means on a layer (iteration 2) -> pre-train again on the new labels -> CTC fine-tune -> decode -> units.
Tiny sizes: the point is that every step reads what the previous one wrote, and exits 0."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent


def run(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else shutil.which(args[0])
    assert exe, f"console script {args[0]} is not installed (pip install -e .)"
    p = subprocess.run([exe, *map(str, args[1:])], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def test_pipeline_through_console_scripts(tmp_path):
    run("k2ssl-corpus", "--hours", "0.03", "--out", "corpus", "--workers", "0", cwd=tmp_path)
    c = tmp_path / "corpus"
    for split in ("train", "dev", "test"): assert (c / f"{split}_cuts.jsonl.gz").exists()
    # iteration 1: MFCC units on train, the same centroids label dev and test
    run("k2ssl-kmeans", c / "train_cuts.jsonl.gz", "--out", "km1", "--k", "20", "--fraction", "0.5", "--n-init", "1",
        "--max-iter", "10", "--quiet", "--label", c / "dev_cuts.jsonl.gz", c / "test_cuts.jsonl.gz", cwd=tmp_path)
    metrics = json.loads((tmp_path / "km1" / "metrics.json").read_text())
    assert 0 < metrics["test_cuts.jsonl.gz"]["pnmi"] <= 1
    common = ["--max-duration", "20", "--max-steps", "4", "--device", "cpu", "--set", "log_every=1,progress=false"]
    run("k2ssl-pretrain", "--preset", "zipformer_tiny", "--num-classes", "20", "--train-cuts", "km1/train_cuts.jsonl.gz",
        "--dev-cuts", "km1/dev_cuts.jsonl.gz", "--exp-dir", "pt1", *common, cwd=tmp_path)
    ckpts = sorted((tmp_path / "pt1").rglob("*.pt"))
    assert ckpts, "pre-training wrote no checkpoint"
    ckpt = ckpts[-1]
    # iteration 2: units of layer 3 of the iteration-1 model, then pre-train again on them
    run("k2ssl-kmeans", c / "train_cuts.jsonl.gz", "--checkpoint", ckpt, "--layer", "3", "--out", "km2", "--k", "20",
        "--fraction", "0.5", "--n-init", "1", "--max-iter", "10", "--quiet", "--label", c / "dev_cuts.jsonl.gz", cwd=tmp_path)
    assert (tmp_path / "km2" / "train_cuts.jsonl.gz").exists()
    run("k2ssl-pretrain", "--preset", "zipformer_tiny", "--num-classes", "20", "--train-cuts", "km2/train_cuts.jsonl.gz",
        "--dev-cuts", "km2/dev_cuts.jsonl.gz", "--exp-dir", "pt2", *common, cwd=tmp_path)
    ckpt2 = sorted((tmp_path / "pt2").rglob("*.pt"))[-1]
    # fine-tune the iteration-2 model with CTC, decode the test split
    run("k2ssl-finetune", "--pretrained", ckpt2, "--train-cuts", c / "train_cuts.jsonl.gz", "--dev-cuts",
        c / "dev_cuts.jsonl.gz", "--exp-dir", "ft", "--max-steps", "3", "--device", "cpu", cwd=tmp_path)
    best = tmp_path / "ft" / "best.pt"
    assert best.exists()
    run("k2ssl-decode", "--checkpoint", best, "--cuts", c / "test_cuts.jsonl.gz", "--out", "dec", cwd=tmp_path)
    errors = json.loads((tmp_path / "dec" / "errors.json").read_text())
    assert 0 <= errors["cer"] and 0 <= errors["wer"]
    hyps = (tmp_path / "dec" / "hyps.jsonl").read_text().splitlines()
    assert len(hyps) > 0
    # discrete units from the iteration-2 k-means folder (it records the checkpoint and layer)
    run("k2ssl-units", c / "dev_cuts.jsonl.gz", "km2", "--out", "units.jsonl.gz", "--quiet", cwd=tmp_path)
    from lhotse import CutSet
    from k2ssl_lit.units import cut_units
    from k2ssl_lit.data import cut_labels
    labelled = {cut.id: cut for cut in CutSet.from_file(tmp_path / "km2" / "dev_cuts.jsonl.gz")}
    for cut in CutSet.from_file(tmp_path / "units.jsonl.gz"):
        assert torch.equal(cut_units(cut), cut_labels(labelled[cut.id]))  # units == iteration-2 labels
