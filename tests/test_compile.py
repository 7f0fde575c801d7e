"""torch.compile with inductor (k2ssl_lit.presets.compile_model): a compiled tiny HuBERT and a compiled tiny Zipformer
compute the loss and the gradients that eager PyTorch computes on the same batches, with the same random masks and
dropouts, over two batch lengths (the second one triggers the dynamic-shape recompilation a training run meets).
Inductor generates C++ on the CPU: these tests need a C++ compiler."""
import shutil

import pytest
import torch

from k2ssl_lit.core import num_frames, seed_everything
from k2ssl_lit.presets import build_model, compile_model, model_preset
from k2ssl_lit.scaling import set_batch_count

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="inductor needs a C++ compiler (g++) on the CPU")


def _step(model, samples: int):
    "Loss and gradients of one training step on a fixed batch of two utterances of `samples` and 0.8 x `samples`."
    for p in model.parameters(): p.grad = None
    g = torch.Generator().manual_seed(samples)
    wave = 0.1 * torch.randn(2, samples, generator=g)
    lens = torch.tensor([samples, samples * 4 // 5])
    labels = torch.randint(0, 20, (2, int(num_frames(samples))), generator=g)
    torch.manual_seed(7)  # the same masks, dropouts and stochastic layer decisions in both models
    out = model(wave, lens, labels)
    out.loss.backward()
    return float(out.loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _pair(preset: str):
    seed_everything(0)
    eager = build_model(model_preset(preset, num_classes=20)).train()
    compiled = build_model(model_preset(preset, num_classes=20)).train()
    compiled.load_state_dict(eager.state_dict())
    for m in (eager, compiled): set_batch_count(m, 100_000.0)  # past the Zipformer's warm-ups, as in most of a run
    return eager, compile_model(compiled, "layers")


@pytest.mark.parametrize("preset,lengths,tolerance", [("hubert_tiny", (16_000, 20_000), 1e-5), ("zipformer_tiny", (16_000,), 1e-4)])
def test_compiled_layers_match_eager(preset, lengths, tolerance, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # compile for real, not from an earlier run's cache
    torch._dynamo.reset()
    eager, compiled = _pair(preset)
    for samples in lengths:
        (le, ge), (lc, gc) = _step(eager, samples), _step(compiled, samples)
        assert abs(lc - le) <= 1e-5 * abs(le), (samples, le, lc)
        assert set(gc) == set(ge)
        # inductor reorders sums, and the Zipformer's Balancers turn float32 rounding near their thresholds into
        # small changes of a few gradients: compare the whole gradient, relative to its size
        diff = sum(float((gc[n] - ge[n]).double().pow(2).sum()) for n in ge) ** 0.5
        size = sum(float(ge[n].double().pow(2).sum()) for n in ge) ** 0.5
        print(f"{preset}, {samples} samples: loss {le:.6f} eager, {lc:.6f} compiled; gradient difference {diff / size:.1e}")
        assert diff <= tolerance * size, (samples, diff / size)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "nothing was compiled"


def test_compiled_training_run_matches_eager(manifest, tmp_path, monkeypatch):
    "k2ssl-pretrain's `compile: layers`: the same losses in log.jsonl and the same weights after 3 steps as eager."
    from test_train import _cfg
    from k2ssl_lit.train import latest_checkpoint, train
    from k2ssl_lit.presets import load_checkpoint
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    runs = {}
    for mode in ("none", "layers"):
        cfg = _cfg(manifest, tmp_path / mode, preset="hubert_tiny", max_steps=3, compile=mode)
        res = train(cfg)
        assert res["steps"] == 3, res
        runs[mode] = ([r["loss"] for r in res["history"]], load_checkpoint(latest_checkpoint(cfg.exp_dir)[0])["model"])
    (le, we), (lc, wc) = runs["none"], runs["layers"]
    assert len(le) == 3 and lc == pytest.approx(le, rel=1e-5), (le, lc)
    assert list(wc) == list(we)  # the same parameter names: checkpoints do not depend on compilation
    assert max(float((wc[n].float() - we[n].float()).abs().max()) for n in we) <= 1e-4
