"""Parity of ScaledAdam + Eden with icefall's (egs/librispeech/ASR/zipformer/optim.py at 36e0420, which the k2SSL
recipe uses): parameters and learning rates after every step of tests/fixtures/optim.pt's scenarios, clipping events
and scale updates included, and Eden's lr at chosen (batch, epoch) points. Regenerate the fixture with
tests/reference/make_optim_fixtures.py."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from k2ssl_lit import optim as ours

FIXTURE = Path(__file__).parent / "fixtures" / "optim.pt"
RTOL = 1e-4


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURE, weights_only=True)


def noise(step: int, name: str, shape, names) -> torch.Tensor:
    "The same draw as the fixture script's `noise`."
    gen = torch.Generator().manual_seed(1000 * step + sorted(names).index(name))
    return torch.randn(shape, generator=gen)


def run_ours(fx, sc, mod=ours):
    "Our ScaledAdam + Eden over the scenario, driven as the trainer drives them (Eden's batch clock set before the step)."
    names = list(fx["shapes"])
    model = nn.Module()
    for n in names: model.register_parameter(n, nn.Parameter(fx["init"][n].clone()))
    cfg = mod.OptimConfig(base_lr=sc["base_lr"], lr_scales={n: 0.5 for n in names if fx["groups"][n] == 1},
                          **{k: (int(v) if k.endswith("period") else v) for k, v in sc["optim"].items()}, **sc["eden"])
    opt, sched = mod.build_optimizer(model, cfg)
    spikes = {int(k): v for k, v in sc["spikes"].items()}
    epoch_at = {int(k): v for k, v in sc["epoch_at"].items()}
    params, lrs = {n: [] for n in names}, []
    for step in range(sc["steps"]):
        if step in epoch_at: sched.step_epoch(epoch_at[step])
        sched.step_batch()
        for n in names:
            p = model.get_parameter(n)
            p.grad = (noise(step, n, p.shape, names) + 0.5 * p.detach()) * spikes.get(step, 1.0)
        opt.step(); opt.zero_grad()
        for n in names: params[n].append(model.get_parameter(n).detach().clone())
        by_scale = {g["lr_scale"]: g["lr"] * g["lr_scale"] for g in opt.param_groups}
        lrs.append([by_scale[1.0], by_scale[0.5]])
    return {n: torch.stack(v) for n, v in params.items()}, torch.tensor(lrs, dtype=torch.float64), opt


def rel_err(a, b):
    return float(((a - b).abs() / b.abs().clamp(min=1e-3)).max())


@pytest.mark.parametrize("name", ["recipe", "short_periods"])
def test_trajectory_matches_icefall(fx, name):
    sc = fx["scenarios"][name]
    params, lrs, opt = run_ours(fx, sc)
    torch.testing.assert_close(lrs, sc["lrs"], rtol=1e-12, atol=0)
    for n, ref in sc["params"].items():
        assert not torch.equal(ref[0], fx["init"][n]), "the reference moved every parameter"
        err = rel_err(params[n], ref)
        assert err < RTOL, f"{name}/{n}: relative error {err:.2e} after {sc['steps']} steps"
    # the scenario did what it claims: clipping events, and a zero-gradient step for the infinite one
    assert sum(cs["num_clipped"] for cs in opt.clip_state) >= 2


def test_eden_points_match_icefall(fx):
    for b, e, B, E, W, s, lr in fx["eden"]["table"].tolist():
        got = ours.eden_lr(b, e, fx["eden"]["base_lr"], lr_batches=B, lr_epochs=E, warmup_batches=W, warmup_start=s)
        assert got == pytest.approx(lr, rel=1e-12, abs=0), (b, e, B, E, W, s)


def test_fixture_is_sensitive(fx):
    "A change in the clipping cadence (a rolling median) or in the scale cadence moves the trajectory past tolerance."
    sc = fx["scenarios"]["recipe"]
    for change in (dict(clip_every_step=True), dict(size_update_period=1.0)):
        params, _, _ = run_ours(fx, sc | {"optim": sc["optim"] | change})
        assert max(rel_err(params[n], ref) for n, ref in sc["params"].items()) > 100 * RTOL, change
