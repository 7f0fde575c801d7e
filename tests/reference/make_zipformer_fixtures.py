"""Write tests/fixtures/zipformer.pt and tests/fixtures/scheduled_float.pt from icefall's k2SSL Zipformer2 code.

Usage: python tests/reference/make_zipformer_fixtures.py --icefall DIR
where DIR is an extracted icefall tree at commit 36e0420 (e.g. `git archive 36e0420 egs/librispeech | tar -x -C DIR`).
The reference modules are imported from DIR/egs/librispeech/SSL/zipformer. k2 is not needed: its swoosh kernels are
replaced by their closed-form formulas; icefall.utils and encoder_interface are stubbed with the two names used.

What is recorded (all plain tensors, numbers and strings, so `torch.load(weights_only=True)` reads it):
- a tiny random Zipformer2 (every stack and downsampling factor 1, 2, 4, 8, 4, 2), its state dict with every tensor
  perturbed so that each one matters, and its eval-mode outputs at T = 96 and T = 101 frames with padding;
- the value of every scheduled or constant setting of that model's modules at chosen batch counts (training mode);
- the gradient-side mechanisms on hand-built tensors: the parameter limit, the absolute-value penalty, the Balancer
  and Whiten backward passes, and BiasNorm's forward and backward.
"""
import argparse
import math
import random
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ICEFALL_COMMIT = "36e0420c7e3e849a25b3d24dbf913c424f3d23c9"
HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures"

# The tiny configuration, in our ZipformerConfig's field names (batch counts are icefall's defaults).
CONFIG = dict(num_layers=(1, 1, 1, 2, 1, 1), dims=(12, 16, 20, 24, 20, 16), ff_dims=(16, 20, 24, 32, 24, 20),
              heads=(4, 4, 4, 4, 4, 4), query_head_dim=(4,) * 6, value_head_dim=(3,) * 6, pos_head_dim=(2,) * 6,
              pos_dim=16, unmasked_dims=(8, 8, 12, 12, 12, 8), conv_kernels=(5, 5, 3, 3, 3, 5),
              downsampling=(1, 2, 4, 8, 4, 2))
BATCH_COUNTS = (0.0, 1.0, 100.0, 571.4, 1000.0, 2500.0, 3999.0, 4000.0, 6000.0, 8000.0, 12000.0, 16000.0, 20000.0,
                35000.0, 50000.0, 1e6)


def _stub_modules():
    "Install stand-ins for k2 (swoosh kernels), icefall.utils.torch_autocast and encoder_interface."
    k2 = types.ModuleType("k2")
    def fwd(shift, offset):
        return lambda x: torch.logaddexp(torch.zeros_like(x), x - shift) - 0.08 * x - offset
    def fwd_deriv(shift, offset):
        return lambda x: (fwd(shift, offset)(x), torch.sigmoid(x - shift) - 0.08)
    k2.swoosh_l = k2.swoosh_l_forward = fwd(4.0, 0.035)
    k2.swoosh_r = k2.swoosh_r_forward = fwd(1.0, 0.313261687)
    k2.swoosh_l_forward_and_deriv = fwd_deriv(4.0, 0.035)
    k2.swoosh_r_forward_and_deriv = fwd_deriv(1.0, 0.313261687)
    sys.modules["k2"] = k2
    icefall = types.ModuleType("icefall"); utils = types.ModuleType("icefall.utils")
    utils.torch_autocast = lambda enabled=True, **kw: torch.autocast("cpu", enabled=False)
    icefall.utils = utils
    sys.modules["icefall"], sys.modules["icefall.utils"] = icefall, utils
    ei = types.ModuleType("encoder_interface"); ei.EncoderInterface = nn.Module
    sys.modules["encoder_interface"] = ei


def _import_icefall(root: Path):
    d = root / "egs" / "librispeech" / "SSL" / "zipformer"
    if not (d / "zipformer.py").exists(): sys.exit(f"{d}/zipformer.py not found: pass --icefall <icefall tree>")
    _stub_modules()
    sys.path.insert(0, str(d))
    import scaling, zipformer  # noqa: E401  (icefall's modules)
    return scaling, zipformer


def _model(zipformer):
    c = CONFIG
    return zipformer.Zipformer2(
        output_downsampling_factor=1, downsampling_factor=c["downsampling"], num_encoder_layers=c["num_layers"],
        encoder_dim=c["dims"], encoder_unmasked_dim=c["unmasked_dims"], query_head_dim=c["query_head_dim"],
        pos_head_dim=c["pos_head_dim"], value_head_dim=c["value_head_dim"], pos_dim=c["pos_dim"],
        num_heads=c["heads"], feedforward_dim=c["ff_dims"], cnn_module_kernel=c["conv_kernels"],
        dropout=zipformer.ScheduledFloat((0.0, 0.3), (20000.0, 0.1)), warmup_batches=4000.0)


def _perturb(model):
    "Move every tensor away from its initial value, so that a wrong mapping of any one of them shows."
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bypass_scale"): p.copy_(0.3 + 0.7 * torch.rand(p.shape, generator=g))
            elif name.endswith("downsample.bias") or name.endswith("downsample_output.bias"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("log_scale"): p.copy_(torch.rand(p.shape, generator=g) - 0.5)
            else: p.add_(0.1 * torch.randn(p.shape, generator=g))


def encoder_cases(zipformer):
    torch.manual_seed(0)
    model = _model(zipformer)
    _perturb(model)
    model.eval()
    cases = []
    for T, lengths in [(96, (96, 70)), (101, (101, 64)), (50, None)]:
        B = 2 if lengths is not None else 1
        x = torch.randn(B, T, CONFIG["dims"][0], generator=torch.Generator().manual_seed(T))
        lens = torch.tensor(lengths if lengths is not None else (T,) * B)
        mask = (torch.arange(T)[None] >= lens[:, None]) if lengths is not None else None
        with torch.no_grad():
            out, _ = model(x.transpose(0, 1), lens, src_key_padding_mask=mask)
        cases.append(dict(x=x, lengths=lens, padded=lengths is not None, out=out.transpose(0, 1).contiguous()))
    return dict(state={k: v.clone() for k, v in model.state_dict().items()}, cases=cases)


def schedules(scaling, zipformer):
    "Every scheduled or constant setting of the tiny model's modules, by icefall module name, at BATCH_COUNTS."
    model = _model(zipformer).train()
    attrs = {scaling.Balancer: ("min_positive", "max_positive", "min_abs", "max_abs", "prob", "grad_scale"),
             scaling.Whiten: ("whitening_limit", "grad_scale", "min_prob", "max_prob"),
             zipformer.BypassModule: ("skip_rate", "straight_through_rate", "scale_min", "scale_max"),
             zipformer.Zipformer2EncoderLayer: ("attention_skip_rate", "conv_skip_rate", "ff2_skip_rate",
                                                 "ff3_skip_rate"),
             zipformer.RelPositionMultiheadAttentionWeights: ("pos_emb_skip_rate",),
             scaling.ActivationDropoutAndLinear: ("dropout_p",),
             scaling.Dropout2: ("p",),
             scaling.BiasNorm: ("log_scale_min", "log_scale_max")}
    sched_modules = [m for m in model.modules() if isinstance(m, scaling.ScheduledFloat)]
    values = {}
    for b in BATCH_COUNTS:
        for m in sched_modules: m.batch_count = b
        for name, mod in model.named_modules():
            for cls, names in attrs.items():
                if type(mod) is not cls: continue
                for a in names:
                    values.setdefault(f"{name}.{a}", []).append(float(getattr(mod, a)))
    return dict(batch_counts=torch.tensor(BATCH_COUNTS, dtype=torch.float64), names=list(values),
                values=torch.tensor(list(values.values()), dtype=torch.float32))  # (names, batch counts)


def scheduled_float_values(scaling):
    "icefall's ScheduledFloat on a few hand-picked schedules, at batch counts including breakpoints and outside."
    points = [((0.0, 0.3), (20000.0, 0.1)), ((0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0)),
              ((0.0, 0.5), (8000.0, 0.125)), ((571.4285714285714, 0.5), (857.1428571428571, 0.035)),
              ((-10.0, 1.0), (0.0, 2.0), (5.0, -3.0), (7.5, 4.0))]
    counts = [-100.0, -10.0, -3.0, 0.0, 0.5, 2.5, 5.0, 6.0, 7.5, 100.0, 600.0, 700.0, 857.1428571428571, 3999.5,
              4000.0, 4001.0, 8000.0, 12345.6, 16000.0, 20000.0, 1e7]
    out = []
    for pts in points:
        s = scaling.ScheduledFloat(*pts, default=-1.0); s.train()
        vals = []
        for c in counts:
            s.batch_count = c; vals.append(float(s))
        out.append(dict(points=torch.tensor(pts, dtype=torch.float64), values=torch.tensor(vals, dtype=torch.float64)))
    return dict(commit=ICEFALL_COMMIT, batch_counts=torch.tensor(counts, dtype=torch.float64), schedules=out)


def gradient_side(scaling):
    "icefall's gradient-side mechanisms on hand-built tensors (deterministic: the random gates are bypassed)."
    g = torch.Generator().manual_seed(2)
    res = {}
    # limit_param_value's backward: values below, inside and above [0.2, 1.0], gradients of both signs.
    x = torch.tensor([0.0, 0.1, 0.19, 0.2, 0.5, 0.99, 1.0, 1.2, 3.0] * 2, dtype=torch.float64)
    gr = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, -0.5, -4.0, 1.5, -1.0, 2.0, -0.5, -3.0, 1.0, -2.0, 0.5, 4.0,
                       -1.5], dtype=torch.float64)
    xr = x.clone().requires_grad_()
    scaling.LimitParamValue.apply(xr, 0.2, 1.0).backward(gr)
    res["limit"] = dict(x=x, grad=gr, min=0.2, max=1.0, out=xr.grad.clone())
    # penalize_abs_values_gt's backward: scores around the limit of 25.
    x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64) * 30
    gr = torch.randn(x.shape, generator=g, dtype=torch.float64) * 1e-3
    xr = x.clone().requires_grad_()
    scaling.penalize_abs_values_gt(xr, limit=25.0, penalty=1e-4).backward(gr)
    res["penalty"] = dict(x=x, grad=gr, limit=25.0, penalty=1e-4, out=xr.grad.clone())
    # Balancer: the limits converted from (positive fraction, mean |x|) and the backward pass on channels that break
    # each limit, channels last and channels at dim 1.
    bal = []
    for channel_dim, settings in [(-1, (0.05, 0.95, 0.2, 100.0, 0.04)), (-1, (0.4, 0.6, 0.5, 2.0, 0.04)),
                                  (1, (0.1, 1.0, 0.2, 10.0, 0.04)), (-1, (0.3, 0.7, 0.0, 4.0, 0.01))]:
        C = 6
        base = torch.randn(3, 40, C, generator=g)
        base[..., 0] = -base[..., 0].abs() - 0.5        # all negative
        base[..., 1] = base[..., 1].abs() + 0.5         # all positive
        base[..., 2] *= 0.01                            # tiny
        base[..., 3] *= 30.0                            # huge
        base[..., 4] = base[..., 4] * 0.3 + 1.0         # mostly positive
        if channel_dim == 1: base = base.transpose(1, 2).contiguous()   # (3, C, 40)
        gr = torch.randn(base.shape, generator=g)
        mp, xp, mn, mx, gs = settings
        mod = scaling.Balancer(C, channel_dim=channel_dim, min_positive=mp, max_positive=xp, min_abs=mn, max_abs=mx,
                               grad_scale=gs, prob=1.0)
        xr = base.clone().requires_grad_()
        random.seed(0)
        mod(xr).backward(gr)
        bal.append(dict(x=base, grad=gr, channel_dim=channel_dim, min_positive=mp, max_positive=xp, min_abs=mn,
                        max_abs=mx, grad_scale=gs, out=xr.grad.clone()))
    res["balancer"] = bal
    # Whiten: the metric and the backward pass, below and above the limit, one and several groups.
    wh = []
    for groups, limit, skew in [(1, 5.0, False), (1, 2.0, True), (4, 3.0, True), (4, 50.0, True)]:
        x = torch.randn(2, 40, 16, generator=g)
        if skew: x = x @ torch.diag(torch.logspace(0, 1.2, 16)) + 0.3 * torch.randn(2, 40, 1, generator=g)
        gr = torch.randn(x.shape, generator=g)
        mod = scaling.Whiten(num_groups=groups, whitening_limit=limit, prob=(0.025, 0.25), grad_scale=0.02)
        metric = scaling._whitening_metric(x.reshape(-1, 16), groups).item()
        xr = x.clone().requires_grad_()
        scaling.WhiteningPenaltyFunction.apply(xr, mod).backward(gr)
        wh.append(dict(x=x, grad=gr, num_groups=groups, limit=limit, grad_scale=0.02, metric=metric,
                       out=xr.grad.clone(), prob_after=float(mod.prob)))
    res["whiten"] = wh
    # BiasNorm: forward and backward, channels last, with its log-scale passed through the limit outside its range.
    x = torch.randn(2, 7, 10, generator=g) * 2 + 0.5
    bias = torch.randn(10, generator=g) * 0.3
    gr = torch.randn(x.shape, generator=g)
    bn = {}
    for log_scale, lg in [(0.4, 1.0), (1.8, 1.0), (-2.0, -1.0), (1.8, -1.0)]:
        xr, br = x.clone().requires_grad_(), bias.clone().requires_grad_()
        ls = torch.tensor(log_scale, requires_grad=True)
        ls_lim = scaling.LimitParamValue.apply(ls, -1.5, 1.5)
        y = scaling.BiasNormFunction.apply(xr, br, ls_lim, -1, False)
        (y * gr).sum().mul(lg).backward()
        bn[f"{log_scale}_{lg}"] = dict(log_scale=log_scale, loss_sign=lg, y=y.detach().clone(), x_grad=xr.grad.clone(),
                                       bias_grad=br.grad.clone(), log_scale_grad=ls.grad.clone())
    res["biasnorm"] = dict(x=x, bias=bias, grad=gr, cases=list(bn.values()))
    # the Balancer's conversions of its limits, on a grid
    ps = [0.0, 0.025, 0.05, 0.1, 0.25, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.75, 0.95, 1.0]
    probe = scaling.Balancer(1, channel_dim=-1, prob=1.0)
    captured = {}
    orig = scaling.BalancerFunction.apply
    def grab(x, min_mean, max_mean, min_rms, max_rms, grad_scale, channel_dim):
        captured.update(min_mean=min_mean, max_mean=max_mean, min_rms=min_rms, max_rms=max_rms)
        return x
    scaling.BalancerFunction.apply = grab
    conv = []
    for p in ps:
        probe.min_positive, probe.max_positive, probe.min_abs, probe.max_abs = p, p, p, p
        probe(torch.zeros(2, 1, requires_grad=True))
        conv.append((p, captured["min_mean"], captured["min_rms"]))
    scaling.BalancerFunction.apply = orig
    res["balancer_limits"] = torch.tensor(conv, dtype=torch.float64)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--icefall", type=Path, required=True, help="an extracted icefall tree at 36e0420")
    args = ap.parse_args()
    torch.set_num_threads(1)
    scaling, zipformer = _import_icefall(args.icefall)
    OUT.mkdir(parents=True, exist_ok=True)
    fx = dict(commit=ICEFALL_COMMIT, config={k: list(v) if isinstance(v, tuple) else v for k, v in CONFIG.items()},
              **encoder_cases(zipformer), schedules=schedules(scaling, zipformer), **gradient_side(scaling))
    torch.save(fx, OUT / "zipformer.pt")
    torch.save(scheduled_float_values(scaling), OUT / "scheduled_float.pt")
    for f in ("zipformer.pt", "scheduled_float.pt"):
        print(f, (OUT / f).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
