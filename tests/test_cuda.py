"""The CUDA paths, on the device named by K2SSL_TEST_DEVICE (default: "cuda" when CUDA is available, else the whole
module is skipped, as in CI):

- one training step of the tiny Zipformer and the tiny HuBERT (waveform CNN and fbank frontends) under autocast bf16 and
  fp16 (fp16 through a GradScaler, as the trainer runs it): finite loss and gradients, the loss within LOSS_TOL of the
  fp32 step's and the gradient within GRAD_COS of its direction;
- the HuBERT attention (`F.scaled_dot_product_attention`) against a plain float64 softmax(QKᵀ/√d)V, in fp32, bf16 and
  fp16, with padding, under each SDPA backend the device offers;
- the custom autograd functions (`grep torch.autograd.Function k2ssl_lit/`): `torch.autograd.gradcheck` in float64 on
  the device where the backward is the true derivative (the strided-matmul CNN convolution, exact Swoosh, and the
  gradient regularisers in their inactive range, where they must be the identity), and the deliberate gradient changes
  checked against their formulas and against the same backward on the CPU;
- `k2ssl_lit.kmeans.nearest_centroid` on the device: the same labels as on the CPU and as a float64 argmin;
- the trainer in a one-process process group for 2 steps: nccl on a GPU, gloo on the CPU (the same code path).

    K2SSL_TEST_DEVICE=cuda pytest -q tests/test_cuda.py   # on a GPU machine (benchmarks/gpu_check.sh runs this)
    K2SSL_TEST_DEVICE=cpu pytest -q tests/test_cuda.py    # dry run of the same tests on the CPU (~30 s)
"""
import contextlib, copy, math, os, socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

DEVICE = os.environ.get("K2SSL_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
if not DEVICE:
    pytest.skip("no CUDA device (set K2SSL_TEST_DEVICE=cpu to dry-run these tests on the CPU)", allow_module_level=True)
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    raise RuntimeError(f"K2SSL_TEST_DEVICE={DEVICE} but torch {torch.__version__} sees no CUDA device")

from k2ssl_lit.core import autocast_for, num_frames
from k2ssl_lit.hubert import MultiHeadSelfAttention, _GradScale, _StridedConv, conv1d_matmul
from k2ssl_lit.kmeans import nearest_centroid
from k2ssl_lit.presets import build_model, model_preset
from k2ssl_lit.scaling import (AbsValuePenalty, BalancerFunction, LimitParamValue, ScheduledDropout, SwooshFunction,
                               Whiten, WhitenFunction, balancer_loss, set_batch_count, swoosh_formula)

DEV = torch.device(DEVICE)
ON_CUDA = DEV.type == "cuda"
# how far a low-precision step may be from the fp32 step: |Δloss| <= rel·|loss| + abs, gradient cosine >= GRAD_COS.
# Measured on a CPU (torch 2.14, these batches): bf16 |Δloss|/loss <= 2.1e-3 and cosine >= 0.9999; fp16 1.7e-4 and
# 1.00000. The bounds leave about 10x that for other kernels and accumulation orders.
LOSS_TOL = {"bf16": (0.02, 0.0), "fp16": (0.005, 0.0)}
GRAD_COS = {"bf16": 0.995, "fp16": 0.999}
ATTN_TOL = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 3e-3}  # max |error| / max |reference| of the attention output


@pytest.fixture(autouse=True)
def _no_tf32():
    "fp32 means fp32: no TF32 in cuDNN convolutions or matrix products while these tests run."
    conv, mm = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False; torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cudnn.allow_tf32 = conv; torch.set_float32_matmul_precision(mm)


def _fp16_scaler_or_skip():
    """A GradScaler for the device, or a skip where this torch has none for it (older torch on the CPU). It starts at
    2^10, not 2^16: these losses (~25, logits over temperature 0.1) overflow fp16 gradients at 2^16, and the trainer's
    scaler gets down there by skipping its first steps."""
    try: return torch.amp.GradScaler(DEV.type, init_scale=2.0 ** 10)
    except (RuntimeError, ValueError, TypeError) as e: pytest.skip(f"no fp16 GradScaler on {DEV.type}: {e}")


def _batch(num_classes=20, seconds=(1.0, 0.7)):
    "Two random waveforms of different lengths (padding is exercised) and random labels, on the device."
    g = torch.Generator().manual_seed(0)
    n = [int(s * 16_000) for s in seconds]
    wav = 0.1 * torch.randn(len(n), max(n), generator=g)
    for b, m in enumerate(n): wav[b, m:] = 0
    labels = torch.randint(0, num_classes, (len(n), int(num_frames(max(n)))), generator=g)
    return wav.to(DEV), torch.tensor(n, device=DEV), labels.to(DEV)


def _without_dropout(model):
    "Every dropout at 0: dropout masks may be drawn differently per dtype on a GPU, and the steps must be comparable."
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, ScheduledDropout)): m.p = 0.0
        if isinstance(m, MultiHeadSelfAttention): m.dropout = 0.0
    return model


def _step(model, precision, batch, scaler=None):
    "One seeded forward + backward; returns the loss and the gradient as one float64 vector (unscaled for fp16)."
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1234)
    wav, lens, labels = batch
    with autocast_for(DEV, precision):
        out = model(wav, lens, labels, generator=torch.Generator(DEV).manual_seed(1))
    loss = out.loss.float()
    (scaler.scale(loss) if scaler is not None else loss).backward()
    inv = 1.0 / scaler.get_scale() if scaler is not None else 1.0
    grad = torch.cat([(p.grad.double() * inv).flatten() for p in model.parameters() if p.grad is not None])
    return float(loss.detach()), grad


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("preset,frontend", [("zipformer_tiny", "cnn"), ("zipformer_tiny", "fbank"),
                                             ("hubert_tiny", "cnn"), ("hubert_tiny", "fbank")])
def test_autocast_training_step(preset, frontend, precision):
    """Finite loss and gradients under autocast; both close to the fp32 step from the same weights and random draws
    (training mode: span masks, Balancer and Whiten draws alike; dropout off, see _without_dropout)."""
    torch.manual_seed(0)
    base = _without_dropout(build_model(model_preset(preset, 20, frontend=frontend))).to(DEV).train()
    set_batch_count(base, 0.0)  # the start of training: the Balancers act most often
    batch = _batch()
    ref_loss, ref_grad = _step(copy.deepcopy(base), "fp32", batch)
    assert math.isfinite(ref_loss) and torch.isfinite(ref_grad).all()
    scaler = _fp16_scaler_or_skip() if precision == "fp16" else None
    for attempt in range(4):  # fp16: an overflow skips the step and halves the scale, as the trainer's GradScaler does
        loss, grad = _step(copy.deepcopy(base), precision, batch, scaler)
        if scaler is None or torch.isfinite(grad).all(): break
        scaler.update(scaler.get_scale() / 2)
    assert math.isfinite(loss), loss
    assert torch.isfinite(grad).all(), f"non-finite gradient after {attempt + 1} tries"
    rel, abs_ = LOSS_TOL[precision]
    assert abs(loss - ref_loss) <= rel * abs(ref_loss) + abs_, (loss, ref_loss)
    cos = float(F.cosine_similarity(grad, ref_grad, dim=0))
    assert cos >= GRAD_COS[precision], cos


def _attention_reference(mha, x, pad):
    "softmax(QKᵀ/√d)V in float64 with the module's weights; padded keys left out (all keys for an all-padded row)."
    B, T, D = x.shape
    H = mha.num_heads
    w = {n: p.detach().double() for n, p in mha.named_parameters()}
    q, k, v = F.linear(x.double(), w["qkv.weight"], w["qkv.bias"]).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    if pad is not None:
        keep = ~pad | pad.all(1, keepdim=True)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
    return F.linear(y, w["out.weight"], w["out.bias"])


SDPA_BACKENDS = ["default", "MATH", "EFFICIENT_ATTENTION", "FLASH_ATTENTION", "CUDNN_ATTENTION"]


@pytest.mark.parametrize("backend", SDPA_BACKENDS)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_sdpa_attention_matches_math(precision, padded, backend):
    "MultiHeadSelfAttention (through SDPA) against the float64 formula, forward and input gradient."
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(0)
    mha = MultiHeadSelfAttention(64, 4).to(DEV).eval()
    x = torch.randn(3, 37, 64, device=DEV, requires_grad=True)
    pad = torch.arange(37, device=DEV)[None] >= torch.tensor([37, 30, 0], device=DEV)[:, None] if padded else None
    ref = _attention_reference(mha, x, pad)
    kernel = sdpa_kernel([getattr(SDPBackend, backend)]) if backend != "default" else contextlib.nullcontext()
    try:
        with kernel, autocast_for(DEV, precision):
            y = mha(x, pad)
            y.float().pow(2).sum().backward()
    except RuntimeError as e:
        if any(m in str(e) for m in ("No available kernel", "No viable backend")) or "not supported" in str(e).lower():
            pytest.skip(f"{backend} cannot run this case on {DEV.type} ({precision}, padded={padded})")
        raise
    err = float((y.detach().double() - ref.detach()).abs().max() / ref.detach().abs().max())
    assert err <= ATTN_TOL[precision], (backend, err)
    (gref,) = torch.autograd.grad(ref.pow(2).sum(), x)
    gerr = float((x.grad.double() - gref).abs().max() / gref.abs().max())
    assert gerr <= 4 * ATTN_TOL[precision], (backend, gerr)


def _gradcheck(fn, *inputs):
    "torch.autograd.gradcheck in float64 on the device (inputs are made float64 leaves there)."
    xs = tuple(t.to(DEV, torch.float64).detach().requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-5, rtol=1e-3)


def _backward(fn, x, grad):
    "The gradient that fn's backward gives x for the incoming `grad` (float64, wherever x lives)."
    x = x.detach().requires_grad_()
    fn(x).backward(grad)
    return x.grad


def _same_as_cpu(fn, x, grad, rtol=1e-10):
    "fn's backward on the device equals its backward on the CPU."
    on_dev = _backward(fn, x.to(DEV), grad.to(DEV)).cpu()
    on_cpu = _backward(fn, x.cpu(), grad.cpu())
    torch.testing.assert_close(on_dev, on_cpu, rtol=rtol, atol=rtol * float(on_cpu.abs().max()))
    return on_dev


@pytest.mark.parametrize("k,stride", [(3, 2), (2, 2), (10, 5)])
def test_gradcheck_strided_conv(k, stride):
    "The strided-matmul convolution of the waveform CNN: gradcheck in x and weight, output = F.conv1d."
    g = torch.Generator().manual_seed(k)
    x, w = torch.randn(2, 23, 3, generator=g), torch.randn(4, 3, k, generator=g)
    _gradcheck(lambda x, w: _StridedConv.apply(x.contiguous(), w, stride), x, w)
    xd, wd = x.to(DEV), w.to(DEV)
    torch.testing.assert_close(conv1d_matmul(xd, wd, stride), F.conv1d(xd.transpose(1, 2), wd, stride=stride).transpose(1, 2),
                               rtol=1e-5, atol=1e-5)
    with autocast_for(DEV, "bf16"):  # under autocast the products run in bf16, as a plain conv would
        assert conv1d_matmul(xd, wd, stride).dtype == torch.bfloat16


def test_gradcheck_swoosh():
    "Swoosh with the exact backward: gradcheck; the one-byte (compact) derivative within 1/255 of it, on the device."
    x = torch.linspace(-8, 8, 101, dtype=torch.float64)
    for shift, offset in ((1.0, 0.313261687), (4.0, 0.035)):
        _gradcheck(lambda x: SwooshFunction.apply(x, shift, offset, False), x)
        exact = _backward(lambda x: SwooshFunction.apply(x, shift, offset, False), x.to(DEV), torch.ones(101, device=DEV, dtype=torch.float64))
        compact = _backward(lambda x: SwooshFunction.apply(x, shift, offset, True), x.to(DEV), torch.ones(101, device=DEV, dtype=torch.float64))
        assert float((compact - exact).abs().max()) <= 1 / 255 + 1e-12
        torch.testing.assert_close(SwooshFunction.apply(x.to(DEV), shift, offset, True).cpu(), swoosh_formula(x, shift, offset))


def test_gradient_functions_limit_and_scale():
    "LimitParamValue: gradcheck inside [min, max], sign flips outside; _GradScale: gradcheck at 1, ×s otherwise."
    _gradcheck(lambda x: LimitParamValue.apply(x, -1.0, 1.0), torch.linspace(-0.9, 0.9, 7))
    x = torch.tensor([-2.0, -2.0, 0.0, 2.0, 2.0], dtype=torch.float64)
    g = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
    got = _same_as_cpu(lambda x: LimitParamValue.apply(x, -1.0, 1.0), x, g)
    assert got.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]  # below min a positive gradient flips; above max a negative one
    _gradcheck(lambda x: _GradScale.apply(x, 1.0), torch.randn(5))
    assert _same_as_cpu(lambda x: _GradScale.apply(x, 0.1), x, g).tolist() == (0.1 * g).tolist()


def test_gradient_functions_abs_value_penalty():
    "AbsValuePenalty: identity below the limit (gradcheck); + penalty·sign(x) above it."
    _gradcheck(lambda x: AbsValuePenalty.apply(x, 10.0, 0.5), torch.randn(4, 6))
    x = torch.tensor([-3.0, -0.5, 0.5, 3.0], dtype=torch.float64)
    got = _same_as_cpu(lambda x: AbsValuePenalty.apply(x, 1.0, 0.25), x, torch.ones(4, dtype=torch.float64))
    assert got.tolist() == [0.75, 1.0, 1.0, 1.25]


def test_gradient_functions_balancer():
    "BalancerFunction: identity when every channel is in range (gradcheck); else g + |g|·∇L rescaled, as on the CPU."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    wide = (-10.0, 10.0, 1e-3, 1e3)  # mean/std and RMS limits that these channels meet
    _gradcheck(lambda x: BalancerFunction.apply(x, wide, 0.04, -1), x)
    x[:, 0] += 3.0; x[:, 1] *= 1e-3                   # one channel too positive, one too small
    narrow = (-0.5, 0.5, 0.5, 2.0)
    grad = torch.randn(50, 6, generator=g, dtype=torch.float64)
    got = _same_as_cpu(lambda x: BalancerFunction.apply(x, narrow, 0.04, -1), x, grad, rtol=1e-5)  # float32 inside
    xf = x.float().requires_grad_()  # the formula: the loss's gradient, each channel rescaled to RMS grad_scale
    (lg,) = torch.autograd.grad(balancer_loss(xf, -1, *narrow).sum(), xf)
    lg = lg * (0.04 / lg.pow(2).mean(0, keepdim=True).sqrt().clamp(min=1e-20))
    torch.testing.assert_close(got.float(), grad.float() + grad.float().abs() * lg, rtol=1e-5, atol=1e-6)
    assert not torch.equal(got[:, :2], grad[:, :2])


def test_gradient_functions_whiten():
    "WhitenFunction: identity under the limit (gradcheck); over it, adds the metric's gradient at grad_scale·‖g‖."
    g = torch.Generator().manual_seed(0)
    owner = Whiten(8)
    white = torch.randn(200, 8, generator=g, dtype=torch.float64)
    _gradcheck(lambda x: WhitenFunction.apply(x, owner, 100.0, 0.1), white[:20])
    skewed = white @ torch.diag(torch.tensor([10.0] + [0.1] * 7, dtype=torch.float64))  # anisotropic: over the limit
    grad = torch.randn(200, 8, generator=g, dtype=torch.float64)
    got = _same_as_cpu(lambda x: WhitenFunction.apply(x, owner, 2.0, 0.1), skewed, grad, rtol=1e-5)
    assert owner.prob == owner.max_prob  # the backward saw the metric over the limit
    added = got - grad
    torch.testing.assert_close(float(added.norm()), 0.1 * float(grad.norm()), rtol=1e-4, atol=0)


def test_nearest_centroid_on_device():
    "Exact labels on the device: the same as on the CPU and as a float64 argmin (lowest index on ties)."
    rng = np.random.default_rng(0)
    C = rng.standard_normal((60, 48)).astype(np.float32)
    C[59] = C[0]                                                    # a duplicate centroid: index 0 wins
    x = rng.standard_normal((6000, 48)).astype(np.float32)
    a, b = rng.integers(0, 60, 1000), rng.integers(0, 60, 1000)
    x[:1000] = ((C[a].astype(np.float64) + C[b]) / 2).astype(np.float32)  # midpoints: near or exact ties
    grid = 2 * rng.integers(-2, 3, (20, 16)).astype(np.float32)           # integer grid: exact ties
    mid = (grid[rng.integers(0, 20, 500)] + grid[rng.integers(0, 20, 500)]) / 2
    for xs, cs in ((x, C), (mid, grid)):
        on_dev = nearest_centroid(xs, cs, chunk_size=1000, device=DEVICE).numpy()
        np.testing.assert_array_equal(on_dev, nearest_centroid(xs, cs, chunk_size=1000, device="cpu").numpy())
        c64 = cs.astype(np.float64)
        direct = np.concatenate([((xs[s : s + 500, None].astype(np.float64) - c64) ** 2).sum(2).argmin(1)
                                 for s in range(0, len(xs), 500)])  # float64 sums, the first minimum
        np.testing.assert_array_equal(on_dev, direct)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_trainer_in_one_process_group(manifest, tmp_path, monkeypatch, precision):
    "train() as torchrun would start it with one process: nccl on a GPU (gloo on the CPU), DDP, 2 steps, finite loss."
    import json
    from pathlib import Path
    import k2ssl_lit.train as train_mod
    from k2ssl_lit.optim import OptimConfig
    if precision == "fp16": _fp16_scaler_or_skip()
    backends, real = [], train_mod._init_group
    monkeypatch.setattr(train_mod, "_init_group", lambda backend, *a: (backends.append(backend), real(backend, *a))[1])
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                     TORCHELASTIC_RESTART_COUNT="0").items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    optim = OptimConfig(base_lr=0.02, warmup_batches=3, lr_batches=100, lr_epochs=10, ref_duration=20.0)
    cfg = train_mod.TrainConfig(preset="zipformer_tiny", num_classes=20, train_cuts=str(manifest), exp_dir=str(tmp_path / "exp"),
                                max_samples=16_000, max_duration=20.0, accum_grad=1, num_buckets=10, optim=optim,
                                log_every=1, progress=False, device=DEVICE, precision=precision, max_steps=2)
    out = train_mod.train(cfg)
    assert backends == ["nccl" if ON_CUDA else "gloo"]
    assert out["steps"] == 2 and out["bad_steps"] == 0, out
    assert out["history"] and all(math.isfinite(h["loss"]) for h in out["history"]), out["history"]
    start = json.loads((Path(cfg.exp_dir) / "log.jsonl").read_text().splitlines()[0])
    assert start["kind"] == "start" and start["world_size"] == 1
    assert not torch.distributed.is_initialized()  # train() took its group down
