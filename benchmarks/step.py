"""One pre-training step (forward + backward; fp32, or bf16/fp16 autocast) of HuBERT Base and Zipformer Base models.

The models, all on the same batch (default 4 utterances x 10 s of fixed random waveform with k-means-like labels of
100 classes, runs of 1-8 frames):

  torchaudio       torchaudio.models.hubert_pretrain_base, its own masking; loss = cross-entropy of logit_m against
                   class 0 (where torchaudio puts the positive) + 10 x its feature penalty
  hubert           our HuBERT Base: waveform CNN + HubertEncoder(hubert_base()), cosine head, CNN gradient x 0.1
  zipformer        our Zipformer Base with the waveform CNN, linear head, batch clock at 100000 (steady state)
  zipformer@0      the same at batch count 0 (warm-up: layers, modules and positions skipped more often)
  zipformer_fbank  our Zipformer Base with the fbank frontend; fbank is computed from the waveform inside the step
  icefall_hubert, icefall_zipformer   the k2SSL recipes' own models (HuBERT-CE and Zipformer, Base), built from an
                   icefall tree outside this repository named by --icefall (see benchmarks/icefall_anchors.py); not
                   in the default list, and only with --icefall

Our models come from `k2ssl_lit.presets` (`build_model(model_preset(...))`, the models users train, which read raw
waveforms), or, where that module is missing, are composed from the same parts directly.

Each model runs in its own Python process: peak memory is that process's ru_maxrss, next to the ru_maxrss of an idle
process that imported the same libraries (the baseline, also subtracted). Each process does 1 warm-up step, then
`--steps` timed steps, all seeded alike so that every step draws the same masks, dropouts and layer skips; the figure
is the median. Gradients are dropped (set to None) before each step; no optimizer step. `--precision bf16|fp16` runs
the forward pass under torch.autocast as the trainer does (fp16: the loss scaled by a GradScaler before backward); the
default fp32 keeps the figures comparable with earlier results.

    python benchmarks/step.py [--steps 3] [--batch 4] [--seconds 10] [--device cpu|cuda] [--threads 0]
                              [--precision fp32|bf16|fp16] [--icefall DIR]
                              [--models torchaudio,hubert,zipformer,zipformer@0,zipformer_fbank | all] [--json OUT]
                              [--omp-passive]   # OMP_WAIT_POLICY=PASSIVE: use when other processes load the CPUs
    python benchmarks/step.py --profile zipformer     # where one model's step spends its time

On a machine whose cores other processes also use, OpenMP's threads spin-wait for each other at every parallel
region and lose their core for a whole time slice: the many small operations of a Zipformer step then slow down up
to 5x, far more than the large matrix products of HuBERT. `--omp-passive` makes idle threads sleep instead; the load
average is printed at the start, after each model and at the end.
"""
from __future__ import annotations
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit  # noqa: E402

MODELS = ("torchaudio", "hubert", "zipformer", "zipformer@0", "zipformer_fbank")
ANCHORS = ("icefall_hubert", "icefall_zipformer")  # need --icefall DIR
PRECISIONS = ("fp32", "bf16", "fp16")
CPU_FP32_ONLY = {  # model -> why it cannot run under autocast on the CPU (skipped there, not failed)
    "icefall_zipformer": "the recipe's custom autograd functions use torch.cuda.amp.custom_fwd/custom_bwd, so under CPU "
                         "autocast their backward mixes bf16 and fp32 (ActivationDropoutAndLinear); the recipe trains "
                         "with autocast on GPUs only",
}
AIMS = (  # (name, numerator row, denominator row, what is compared, aim, ">=" or "<=")
    ("torchaudio time / hubert time", "torchaudio", "hubert", "time", 2.0, ">="),
    ("hubert time / zipformer time", "hubert", "zipformer", "time", 2.4, ">="),
    ("zipformer / hubert peak memory", "zipformer", "hubert", "mem", 0.6, "<="),
    ("hubert time / zipformer_fbank time", "hubert", "zipformer_fbank", "time", 5.0, ">="),
)
FIGURES = (  # ratios printed without an aim: against the recipes' own models
    ("icefall_hubert time / icefall_zipformer time", "icefall_hubert", "icefall_zipformer", "time"),
    ("icefall_hubert time / hubert time", "icefall_hubert", "hubert", "time"),
    ("icefall_zipformer time / zipformer time", "icefall_zipformer", "zipformer", "time"),
    ("icefall_hubert time / zipformer time", "icefall_hubert", "zipformer", "time"),
    ("icefall_zipformer / zipformer peak memory", "icefall_zipformer", "zipformer", "mem"),
)


def _import_package():
    try: import k2ssl_lit  # noqa: F401
    except ImportError: sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def make_batch(batch: int, seconds: float, num_classes: int, seed: int = 0):
    "Fixed random waveforms (B, N) at 16 kHz, full lengths, and labels (B, T) in runs of 1-8 frames, like k-means units."
    import torch
    _import_package()
    from k2ssl_lit.core import num_frames
    g = torch.Generator().manual_seed(seed)
    N = int(seconds * 16_000)
    T = int(num_frames(N))
    wav = 0.1 * torch.randn(batch, N, generator=g)
    labels = torch.empty(batch, T, dtype=torch.long)
    for b in range(batch):
        t = 0
        while t < T:
            run = int(torch.randint(1, 9, (), generator=g))
            labels[b, t:t + run] = int(torch.randint(0, num_classes, (), generator=g))
            t += run
    return wav, torch.full((batch,), N, dtype=torch.long), labels


class TorchaudioStep:
    "torchaudio's HuBERT pre-training model with the loss of its recipe (masked frames only)."
    def __init__(self, num_classes: int):
        import torchaudio
        self.model = torchaudio.models.hubert_pretrain_base(num_classes=num_classes)
        self.parts = dict(frontend=self.model.wav2vec2.feature_extractor, encoder=self.model.wav2vec2.encoder.transformer,
                          head=self.model.logit_generator)

    def loss(self, wav, lens, labels):
        import torch
        import torch.nn.functional as F
        logit_m, logit_u, feature_pen = self.model(wav, labels, lens)
        target = torch.zeros(logit_m.shape[0], dtype=torch.long, device=logit_m.device)  # the positive is column 0
        return F.cross_entropy(logit_m.float(), target) + 10.0 * feature_pen


class OurStep:
    "One of our SSL models (presets when available), loss as SSLModel computes it."
    def __init__(self, name: str, num_classes: int):
        _import_package()
        from k2ssl_lit.scaling import set_batch_count
        base = name.split("@")[0]
        try:
            from k2ssl_lit.presets import build_model, model_preset
            preset, frontend = {"hubert": ("hubert_base", "cnn"), "zipformer": ("zipformer_base", "cnn"),
                                "zipformer_fbank": ("zipformer_base", "fbank")}[base]
            self.model, self.source = build_model(model_preset(preset, num_classes, frontend=frontend)), "presets"
            self.features = None
        except ImportError:
            self.model, self.features = self._compose(base, num_classes)
            self.source = "composed"
        if "zipformer" in base: set_batch_count(self.model, float(name.split("@")[1]) if "@" in name else 100_000.0)
        self.parts = dict(frontend=self.model.frontend, encoder=self.model.encoder, head=self.model.head)

    @staticmethod
    def _compose(base, num_classes):
        from k2ssl_lit.features import FeatureFn
        from k2ssl_lit.hubert import CNNConfig, FbankFrontend, FbankFrontendConfig, HubertEncoder, WaveformCNN, hubert_base
        from k2ssl_lit.ssl import SSLConfig, SSLModel
        from k2ssl_lit.zipformer import ZipformerEncoder, zipformer_base
        if base == "hubert":
            cfg = SSLConfig(num_classes=num_classes, head="cosine", feature_grad_mult=0.1, dropout_input=0.1)  # fairseq HuBERT Base
            return SSLModel(WaveformCNN(CNNConfig()), HubertEncoder(hubert_base()), cfg), None
        cfg = SSLConfig(num_classes=num_classes, head="linear")
        if base == "zipformer": return SSLModel(WaveformCNN(CNNConfig()), ZipformerEncoder(zipformer_base()), cfg), None
        return SSLModel(FbankFrontend(FbankFrontendConfig()), ZipformerEncoder(zipformer_base()), cfg), FeatureFn("fbank")

    def loss(self, wav, lens, labels):
        import torch
        if self.features is not None:  # composed fbank model: features inside the timed step
            with torch.no_grad(): wav, lens = self.features(wav, lens)
        return self.model(wav, lens, labels, generator=torch.Generator(wav.device).manual_seed(1)).loss


def build(name: str, num_classes: int, icefall: str | None = None):
    if name in ANCHORS:
        if not icefall: raise ValueError(f"{name} is built from an icefall tree: pass --icefall DIR")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from icefall_anchors import IcefallStep
        return IcefallStep(name, icefall, num_classes)
    return TorchaudioStep(num_classes) if name == "torchaudio" else OurStep(name, num_classes)


def _sync(device):
    import torch
    if device.startswith("cuda"): torch.cuda.synchronize()


def run_step(step, wav, lens, labels, device, precision="fp32", scaler=None):
    "Forward + backward of one step, seeded alike every time; returns its wall and CPU (all threads) times in seconds."
    import random
    import numpy as np
    import torch
    _import_package()
    from k2ssl_lit.core import autocast_for
    for p in step.model.parameters(): p.grad = None
    torch.manual_seed(1234); np.random.seed(1234); random.seed(1234)  # the same masks, dropouts and skips in every step
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    with autocast_for(device, precision):
        loss = step.loss(wav, lens, labels)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def maxrss_gb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: kB


def worker(name: str, a) -> dict:
    "Build one model, time it, and report figures (runs inside its own process)."
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    _import_package()
    import k2ssl_lit.ssl, torchaudio  # noqa: F401  the same imports as the idle baseline
    torch.manual_seed(0)
    wav, lens, labels = make_batch(a.batch, a.seconds, a.classes)
    if name == "idle":
        return dict(model="idle", peak_gb=maxrss_gb(), threads=torch.get_num_threads())
    step = build(name, a.classes, a.icefall)
    step.model.to(a.device).train()
    wav, lens, labels = wav.to(a.device), lens.to(a.device), labels.to(a.device)
    if a.device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
    scaler = torch.amp.GradScaler(torch.device(a.device).type) if a.precision == "fp16" else None
    t0 = time.perf_counter()
    warm, _ = run_step(step, wav, lens, labels, a.device, a.precision, scaler)
    times, cpus = zip(*[run_step(step, wav, lens, labels, a.device, a.precision, scaler) for _ in range(a.steps)])
    out = dict(model=name, source=getattr(step, "source", "torchaudio"), note=getattr(step, "note", None), precision=a.precision,
               params_M=sum(p.numel() for p in step.model.parameters()) / 1e6,
               warmup_s=warm, times_s=times, median_s=statistics.median(times), cpu_s=cpus,
               median_cpu_s=statistics.median(cpus), peak_gb=maxrss_gb(),
               threads=torch.get_num_threads(), wall_s=time.perf_counter() - t0)
    if a.device.startswith("cuda"): out["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return out


def profile(name: str, a):
    "Where one step of `name` spends its time: per part (frontend, encoder, head + loss) and torch.profiler's top ops."
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    wav, lens, labels = make_batch(a.batch, a.seconds, a.classes)
    step = build(name, a.classes, a.icefall)
    from k2ssl_lit.core import autocast_for
    step.model.to(a.device).train()
    wav, lens, labels = wav.to(a.device), lens.to(a.device), labels.to(a.device)
    run_step(step, wav, lens, labels, a.device, a.precision)  # warm-up (--profile: no GradScaler)

    # per part: forward hooks time each part's forward; hooks on the gradients of the frontend's and the encoder's
    # outputs mark when the backward pass leaves the head/loss and the encoder (the autograd engine runs them in turn)
    marks = {}
    def mark(key):
        _sync(a.device); marks[key] = (time.perf_counter(), time.process_time())
    def first(out): return out[0] if isinstance(out, (tuple, list)) else out
    handles = []
    for part, module in step.parts.items():
        handles.append(module.register_forward_pre_hook(lambda m, i, part=part: mark(f"{part}_fwd_start")))
        def post(m, i, out, part=part):
            mark(f"{part}_fwd_end")
            t = first(out)
            if part != "head" and t.requires_grad: t.register_hook(lambda g, part=part: mark(f"{part}_grad"))
        handles.append(module.register_forward_hook(post))
    spans = {  # name -> [(from, to), ...] summed, (from, to, sign)
        "frontend forward": [("frontend_fwd_start", "frontend_fwd_end")],
        "other forward (proj, masking, fbank)": [("start", "frontend_fwd_start"), ("frontend_fwd_end", "encoder_fwd_start"),
                                                 ("encoder_fwd_end", "head_fwd_start")],
        "encoder forward": [("encoder_fwd_start", "encoder_fwd_end")],
        "head + loss forward": [("head_fwd_start", "fwd_end")],
        "head + loss backward": [("fwd_end", "encoder_grad")],
        "encoder backward (+ proj, masking)": [("encoder_grad", "frontend_grad")],
        "frontend backward": [("frontend_grad", "end")],
        "total": [("start", "end")],
    }
    runs = []
    for _ in range(a.steps):
        for p in step.model.parameters(): p.grad = None
        torch.manual_seed(1234)
        marks.clear(); mark("start")
        with autocast_for(a.device, a.precision): loss = step.loss(wav, lens, labels)
        mark("fwd_end")
        loss.backward()
        mark("end")
        runs.append({k: tuple(sum(marks[b][i] - marks[f][i] for f, b in v) for i in (0, 1)) for k, v in spans.items()})
    for h in handles: h.remove()
    med = {k: tuple(statistics.median(r[k][i] for r in runs) for i in (0, 1)) for k in spans}
    med["frontend forward + backward"] = tuple(med["frontend forward"][i] + med["frontend backward"][i] for i in (0, 1))
    print(f"{name}: one step, median of {a.steps}, {torch.get_num_threads()} threads, {a.device}, {a.precision}; "
          f"load average {os.getloadavg()[0]:.2f}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"  {'part':<38} {'wall':>8} {'share':>6} {'CPU':>8} {'share':>6}")
    tw, tc = med["total"]
    for k, (w, c) in med.items():
        print(f"  {k:<38} {w:7.2f}s {100 * w / tw:5.1f}% {c:7.2f}s {100 * c / tc:5.1f}%")

    from torch.profiler import ProfilerActivity, profile as torch_profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device.startswith("cuda") else [])
    with torch_profile(activities=acts) as prof: run_step(step, wav, lens, labels, a.device, a.precision)
    key = "self_cuda_time_total" if a.device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.top))
    return med


def machine(a) -> dict:
    import torch
    return dict(cpus=os.cpu_count(), torch=torch.__version__, device=a.device, python=platform.python_version(),
                processor=platform.processor() or platform.machine(),
                cuda=torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
                commit=commit("k2ssl_lit", "benchmarks"))


def run_in_subprocess(name: str, a) -> dict:
    args = [sys.executable, __file__, f"--worker={name}", f"--steps={a.steps}", f"--batch={a.batch}",
            f"--seconds={a.seconds}", f"--classes={a.classes}", f"--device={a.device}", f"--threads={a.threads}",
            f"--precision={a.precision}"] + ([f"--icefall={a.icefall}"] if a.icefall else [])
    env = {**os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if a.omp_passive else {})}
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode: raise RuntimeError(f"{name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ratio(rows, num, den, key):
    if num not in rows or den not in rows: return None
    return rows[num][key] / rows[den][key]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up step (median reported)")
    p.add_argument("--batch", type=int, default=4, help="utterances per batch")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each utterance")
    p.add_argument("--classes", type=int, default=100, help="label classes (k-means clusters)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads for every model (0: PyTorch's default)")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated subset of {','.join(MODELS + ANCHORS)} (the last two need --icefall), or 'all': "
                        "every model, the icefall ones when --icefall is given")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default: comparable with earlier results), or the forward pass under bf16/fp16 autocast")
    p.add_argument("--icefall", help="an icefall tree (egs/librispeech/SSL inside) for the icefall_* anchor models")
    p.add_argument("--omp-passive", action="store_true",
                   help="OMP_WAIT_POLICY=PASSIVE in every model's process: idle OpenMP threads sleep instead of spinning, "
                        "which keeps the figures sane when other processes load the CPUs")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--profile", choices=MODELS + ANCHORS, help="profile one model instead (in this process) and stop")
    p.add_argument("--top", type=int, default=20, help="rows of torch.profiler's table with --profile")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker: return print(json.dumps(worker(a.worker, a)))
    if a.profile: return profile(a.profile, a)

    names = [n.strip() for n in a.models.split(",") if n.strip()]
    if names == ["all"]: names = list(MODELS) + (list(ANCHORS) if a.icefall else [])
    if bad := [n for n in names if n not in MODELS + ANCHORS]: p.error(f"unknown models {bad}; choose from {MODELS + ANCHORS}")
    if not a.icefall and (need := [n for n in names if n in ANCHORS]): p.error(f"{need} need --icefall DIR (an icefall tree)")
    if a.icefall and not (Path(a.icefall) / "egs" / "librispeech" / "SSL").is_dir():
        p.error(f"--icefall {a.icefall}: no egs/librispeech/SSL there")
    if a.precision == "fp16" and a.device == "cpu": print("note: fp16 autocast on the CPU is slow and not what CPUs train in")
    info, load0 = machine(a), os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    idle = run_in_subprocess("idle", a)
    print(f"machine: {info['cpus']} CPUs ({info['processor']}), torch {info['torch']}, device {a.device}"
          f"{' (' + info['cuda'] + ')' if info['cuda'] else ''}, {idle['threads']} torch threads for every model; "
          f"commit {info['commit']}")
    policy = "PASSIVE (--omp-passive)" if a.omp_passive else os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP's default)")
    print(f"OMP_WAIT_POLICY: {policy}")
    print(f"batch: {a.batch} x {a.seconds:g} s of fixed random waveform, {a.classes} label classes; {a.precision}; "
          f"1 warm-up + median of {a.steps} steps; started {started}")
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} (1/5/15 min; other processes share the CPUs)")
    print(f"idle process (python + torch + torchaudio + k2ssl_lit imported, batch built): peak RSS {idle['peak_gb']:.2f} GB")
    rows, failed, skipped = {}, {}, {}
    for name in names:
        if a.device == "cpu" and a.precision != "fp32" and name in CPU_FP32_ONLY:
            skipped[name] = CPU_FP32_ONLY[name]
            print(f"  ... {name}: skipped on the CPU in {a.precision}: {skipped[name]}", flush=True)
            continue
        try: r = run_in_subprocess(name, a)
        except RuntimeError as e:  # one model's failure is reported; the others still run
            failed[name] = str(e)
            print(f"  ... {name}: FAILED\n{str(e)[-1500:]}", flush=True)
            continue
        r["peak_net_gb"] = r["peak_gb"] - idle["peak_gb"]
        rows[name] = r
        print(f"  ... {name}: {r['median_s']:.2f} s/step (steps {', '.join(f'{t:.2f}' for t in r['times_s'])}; "
              f"warm-up {r['warmup_s']:.2f}; CPU {r['median_cpu_s']:.2f} s), peak {r['peak_gb']:.2f} GB, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
    load1 = os.getloadavg()

    print()
    print(f"{'model':<17} {'source':<10} {'params (M)':>10} {'s/step':>8} {'CPU s':>8} {'peak GB':>8} {'- idle GB':>9}"
          + (f" {'CUDA GB':>8}" if a.device.startswith("cuda") else ""))
    for name, r in rows.items():
        print(f"{name:<17} {r['source']:<10} {r['params_M']:>10.1f} {r['median_s']:>8.2f} {r['median_cpu_s']:>8.2f} "
              f"{r['peak_gb']:>8.2f} "
              f"{r['peak_net_gb']:>9.2f}" + (f" {r['cuda_peak_gb']:>8.2f}" if "cuda_peak_gb" in r else ""))
    print("\nratios (time: wall s/step, judged against the aim; CPU: the same from CPU seconds, less sensitive to other "
          "processes;\nmemory: " + ("torch's peak CUDA allocation):" if a.device.startswith("cuda") else "peak RSS minus the idle process's):"))
    mem = "cuda_peak_gb" if a.device.startswith("cuda") else "peak_net_gb"  # on a GPU: torch's peak allocation
    for n in sorted({r["note"] for r in rows.values() if r.get("note")}): print(f"  {n}")
    aims = []
    for label, num, den, what, aim, op in AIMS:
        v = ratio(rows, num, den, "median_s" if what == "time" else mem)
        if v is None: continue
        met = v >= aim if op == ">=" else v <= aim
        cpu = ratio(rows, num, den, "median_cpu_s") if what == "time" else None
        aims.append(dict(name=label, value=v, cpu_value=cpu, aim=aim, op=op, met=met))
        print(f"  {label:<36} {v:5.2f}x{f' (CPU {cpu:.2f}x)' if cpu else ' ' * 13}  aim {op} {aim}x: "
              f"{'met' if met else 'MISSED'}")
    for label, num, den, what in FIGURES:
        v = ratio(rows, num, den, "median_s" if what == "time" else mem)
        if v is None: continue
        cpu = ratio(rows, num, den, "median_cpu_s") if what == "time" else None
        aims.append(dict(name=label, value=v, cpu_value=cpu, aim=None, op=None, met=None))
        print(f"  {label:<36} {v:5.2f}x{f' (CPU {cpu:.2f}x)' if cpu else ' ' * 13}  (the recipes' own models)")
    if "zipformer@0" in rows and "zipformer" in rows:
        print(f"  {'zipformer@0 time / zipformer time':<36} {ratio(rows, 'zipformer@0', 'zipformer', 'median_s'):5.2f}x "
              f"(CPU {ratio(rows, 'zipformer@0', 'zipformer', 'median_cpu_s'):.2f}x)  batch count 0 vs 100000")
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(dict(
            machine=info, started=started, load_start=load0, load_end=load1, threads=idle["threads"],
            omp_wait_policy=policy, precision=a.precision, icefall=a.icefall, batch=a.batch, seconds=a.seconds, classes=a.classes, steps=a.steps, idle_peak_gb=idle["peak_gb"],
            models=rows, aims=aims, failed=failed, skipped=skipped), indent=1))
        print(f"figures written to {a.json}")
    if failed: raise SystemExit(f"failed: {', '.join(failed)}")
    return rows


if __name__ == "__main__":
    main()
