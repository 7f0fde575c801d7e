"""Reference trajectories of icefall's ScaledAdam + Eden for tests/test_parity_optim.py.

Usage: python tests/reference/make_optim_fixtures.py --icefall /path/to/icefall [--out tests/fixtures/optim.pt]

`--icefall` is an extracted icefall tree at commit 36e0420 (the k2SSL recipe egs/librispeech/SSL/zipformer uses
ASR/zipformer's optim.py). The script imports `ScaledAdam` and `Eden` from there, runs a few optimizer steps on a
handful of free parameters (scalars, vectors, matrices, two of the same shape, in two parameter groups) with
gradients drawn from fixed seeds, and writes the parameters and learning rates after every step, plus Eden's lr at
chosen (batch, epoch) points. The file holds plain tensors, numbers and strings (`torch.load(weights_only=True)`).
"""
import argparse, importlib.util, sys
from pathlib import Path

import torch

COMMIT = "36e0420c7e3e849a25b3d24dbf913c424f3d23c9"

# name -> (shape, group); group 1 has lr_scale 0.5
SHAPES = {"gain": ((), 0), "bias": ((6,), 0), "w1": ((4, 6), 0), "w2": ((4, 6), 0), "proj": ((3, 4), 1),
          "temp": ((1,), 1)}

# Each scenario: ScaledAdam and Eden settings, the steps, and events: step -> gradient multiplier
SCENARIOS = {
    # the recipe's optimizer settings; the threshold is first set at step 10 (provisional, 2x looser) and again
    # at step 20; a 100x gradient at step 14 is clipped, one at step 5 is not (no threshold yet)
    "recipe": dict(optim=dict(clipping_scale=2.0), eden=dict(lr_batches=10.0, lr_epochs=2.0, warmup_batches=6.0,
                   warmup_start=0.0), base_lr=0.05, steps=24, epoch_at={16: 1}, spikes={5: 100.0, 14: 100.0, 21: 30.0}),
    # a short clipping period (threshold at steps 8 and 16, no provisional ones), scale steps every 2 steps, an
    # infinite gradient at step 11 (the step then uses a zero gradient) and a spike at step 18
    "short_periods": dict(optim=dict(clipping_scale=2.0, size_update_period=2, clipping_update_period=8),
                          eden=dict(lr_batches=50.0, lr_epochs=3.0, warmup_batches=4.0, warmup_start=0.5),
                          base_lr=0.04, steps=20, epoch_at={10: 1, 15: 2}, spikes={11: float("inf"), 18: 50.0}),
}


def load_icefall_optim(icefall: Path):
    path = icefall / "egs/librispeech/ASR/zipformer/optim.py"
    spec = importlib.util.spec_from_file_location("icefall_optim", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def initial_params(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(shape, generator=gen) * (0.5 if len(shape) else 1.0)) for n, (shape, _) in SHAPES.items()}


def noise(step: int, name: str, shape) -> torch.Tensor:
    "The random part of parameter `name`'s gradient at `step` (the same draw in the test)."
    gen = torch.Generator().manual_seed(1000 * step + sorted(SHAPES).index(name))
    return torch.randn(shape, generator=gen)


def gradient(step: int, name: str, p: torch.Tensor, spikes: dict) -> torch.Tensor:
    "noise + 0.5·p (a gradient that depends on the parameter, so differences would compound), times a spike."
    return (noise(step, name, p.shape) + 0.5 * p.detach()) * spikes.get(step, 1.0)


def run_icefall(opt_mod, sc: dict) -> dict:
    params = {n: torch.nn.Parameter(v.clone()) for n, v in initial_params().items()}
    groups = [{"named_params": [(n, params[n]) for n in SHAPES if SHAPES[n][1] == g], "lr": sc["base_lr"] * s}
              for g, s in ((0, 1.0), (1, 0.5))]
    opt = opt_mod.ScaledAdam(groups, lr=sc["base_lr"], **sc["optim"])
    sched = opt_mod.Eden(opt, **sc["eden"])
    sched.step_epoch(0)
    traj, lrs = {n: [] for n in SHAPES}, []
    for step in range(sc["steps"]):
        if step in sc["epoch_at"]: sched.step_epoch(sc["epoch_at"][step])
        sched.step_batch(step + 1)  # as pretrain.py: the batch index counts this step, set before the update
        for n, p in params.items(): p.grad = gradient(step, n, p, sc["spikes"])
        opt.step()
        opt.zero_grad()
        for n, p in params.items(): traj[n].append(p.detach().clone())
        lrs.append([g["lr"] for g in opt.param_groups])
    return dict(params={n: torch.stack(v) for n, v in traj.items()}, lrs=torch.tensor(lrs, dtype=torch.float64))


def eden_points(opt_mod) -> dict:
    pts = [(0, 0), (1, 0), (1000, 0), (2500, 0), (4999, 0), (5000, 0), (7500, 0), (7500, 10.5), (20000, 3),
           (100000, 40), (1070, 0), (200, 0)]
    p = torch.nn.Parameter(torch.zeros(3))
    out = []
    for kw in (dict(lr_batches=7500, lr_epochs=10.5, warmup_batches=5000, warmup_start=0.0),
               dict(lr_batches=5000, lr_epochs=6, warmup_batches=500, warmup_start=0.5)):
        opt = opt_mod.ScaledAdam([p], lr=0.045)
        sched = opt_mod.Eden(opt, **kw)
        for b, e in pts:
            sched.step_epoch(e); sched.step_batch(b)
            out.append([b, e, kw["lr_batches"], kw["lr_epochs"], kw["warmup_batches"], kw["warmup_start"],
                        sched.get_last_lr()[0]])
    return dict(table=torch.tensor(out, dtype=torch.float64), base_lr=0.045)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--icefall", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "fixtures" / "optim.pt")
    a = ap.parse_args()
    opt_mod = load_icefall_optim(a.icefall)
    torch.manual_seed(0)
    fixture = dict(icefall_commit=COMMIT, source="egs/librispeech/ASR/zipformer/optim.py (ScaledAdam, Eden)",
                   init={n: v for n, v in initial_params().items()},
                   shapes={n: list(s) for n, (s, _) in SHAPES.items()}, groups={n: g for n, (_, g) in SHAPES.items()},
                   scenarios={}, eden=eden_points(opt_mod))
    for name, sc in SCENARIOS.items():
        res = run_icefall(opt_mod, sc)
        fixture["scenarios"][name] = dict(
            params=res["params"], lrs=res["lrs"], steps=sc["steps"], base_lr=sc["base_lr"],
            optim={k: float(v) for k, v in sc["optim"].items()}, eden={k: float(v) for k, v in sc["eden"].items()},
            epoch_at={str(k): v for k, v in sc["epoch_at"].items()}, spikes={str(k): v for k, v in sc["spikes"].items()})
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
