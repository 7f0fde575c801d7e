"""The extra cost of MT4SSL's EMA teacher per pre-training step: time and peak memory, teacher off against on, on the
same batch, in the same run.

One step is what the trainer does: forward (with the teacher's forward on the unmasked frames when on), backward,
ScaledAdam step, and the teacher's EMA update. The batch is fixed (default 5 utterances x 8 s: the demo's 40 s
batches of 8 s crops) with k-means-like labels; every step is seeded alike, so both arms draw the same masks and
dropouts. Each arm runs in its own process, arms alternating (off, on, off, on, ...), so that a change of the
machine's load hits both; each process does 1 warm-up step and `--steps` timed steps (the figure: their median), and
reports its peak memory (the time figures: the median and the fastest step, which is what a quiet machine gives
when other processes share the cores): on a CPU the process's ru_maxrss minus that of an idle process that imported the same
libraries and built the same batch; on CUDA torch.cuda.max_memory_allocated. An arm's figures are the medians over
its processes.

    python benchmarks/mt4ssl_step.py [--preset zipformer_tiny] [--steps 5] [--repeats 2] [--batch 5] [--seconds 8]
                                     [--device cpu|cuda] [--threads 0] [--json OUT]
"""
from __future__ import annotations
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import commit  # noqa: E402


def maxrss_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def worker(arm: str, a) -> dict:
    "Build the model (and teacher), time `a.steps` steps; runs inside its own process."
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from step import make_batch
    from k2ssl_lit.mt4ssl import EMATeacher, with_objective
    from k2ssl_lit.optim import OptimConfig, build_optimizer
    from k2ssl_lit.presets import build_model, model_preset
    from k2ssl_lit.scaling import set_batch_count
    torch.manual_seed(0)
    wav, lens, labels = make_batch(a.batch, a.seconds, 100)
    if arm == "baseline": return dict(arm=arm, maxrss_mb=maxrss_mb())
    dev = torch.device(a.device)
    model = build_model(with_objective(model_preset(a.preset, 100), "mt4ssl" if arm == "on" else "kmeans")).to(dev).train()
    set_batch_count(model, 1000.0)
    teacher = EMATeacher(model.encoder, model.cfg.online).to(dev) if arm == "on" else None
    opt, _ = build_optimizer(model, OptimConfig(base_lr=0.01, warmup_batches=0))
    wav, lens, labels = wav.to(dev), lens.to(dev), labels.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        torch.manual_seed(1234)
        out = model(wav, lens, labels, generator=torch.Generator(dev).manual_seed(1), teacher=teacher)
        out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if teacher is not None: teacher.update(model.encoder)

    step()  # warm-up
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        sync(); t = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else maxrss_mb()
    return dict(arm=arm, seconds=statistics.median(times), times=times, maxrss_mb=peak,
                params_student=sum(p.numel() for p in model.parameters()),
                params_teacher=sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0)


def run(arm: str, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", arm, "--preset", a.preset, "--steps", str(a.steps), "--batch",
           str(a.batch), "--seconds", str(a.seconds), "--device", a.device, "--threads", str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode: raise SystemExit(f"{arm}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="zipformer_tiny")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="processes per arm, alternating")
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker: print(json.dumps(worker(a.worker, a))); return
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    base = run("baseline", a)["maxrss_mb"] if a.device == "cpu" else 0.0
    res = {"off": [], "on": []}
    for _ in range(a.repeats):
        for arm in ("off", "on"): res[arm].append(run(arm, a))
    arms = {arm: dict(seconds=statistics.median(r["seconds"] for r in rs), fastest=min(min(r["times"]) for r in rs),
                      peak_mb=statistics.median(r["maxrss_mb"] for r in rs) - base,
                      params_teacher=rs[0]["params_teacher"], params_student=rs[0]["params_student"], runs=rs)
            for arm, rs in res.items()}
    off, on = arms["off"], arms["on"]
    dev = torch.cuda.get_device_name(0) if a.device == "cuda" else f"{os.cpu_count()} CPU cores"
    machine = f"{platform.machine()}, {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads; commit {commit()}"
    text = (f"MT4SSL teacher cost per step, {a.preset}, {a.batch} x {a.seconds:g} s, {a.device} ({machine}), "
            f"{time.strftime('%Y-%m-%d')}; median of {a.steps} steps x {a.repeats} processes per arm\n"
            f"  teacher off: {off['seconds']:.3f} s/step (fastest {off['fastest']:.3f}), peak {off['peak_mb']:.0f} MB\n"
            f"  teacher on:  {on['seconds']:.3f} s/step (fastest {on['fastest']:.3f}), peak {on['peak_mb']:.0f} MB "
            f"(teacher: {on['params_teacher'] / 1e6:.2f} M frozen parameters; student {on['params_student'] / 1e6:.2f} M)\n"
            f"  extra: x{on['seconds'] / off['seconds']:.2f} time on the medians (x{on['fastest'] / off['fastest']:.2f} on the "
            f"fastest steps), "
            f"+{on['peak_mb'] - off['peak_mb']:.0f} MB peak ({a.device}: "
            f"{'process RSS above an idle process' if a.device == 'cpu' else 'max allocated'})")
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(dict(preset=a.preset, batch=a.batch, seconds=a.seconds, device=a.device,
                                                machine=machine, date=time.strftime("%Y-%m-%d"), arms=arms, summary=text), indent=1))


if __name__ == "__main__": main()
