"""torch.compile (inductor) against eager on one pre-training step (forward + backward) of HuBERT Base and Zipformer
Base, in the same run: compile cost, steady-state step time, and whether the loss is the same.

Modes (`k2ssl_lit.presets.compile_model`):

  none     eager PyTorch, the baseline
  layers   each encoder layer compiled on its own (regional compilation)
  model    the whole SSL model compiled (frontend, masking, encoder, head, loss)

Each (model, mode) runs in its own process on the same batches (step.py's fixed random waveforms with k-means-like
labels, default 4 utterances x 10 s). A training run sees batches of many lengths, so the process first runs one step
on each of three lengths (100%, 90%, 80% of --seconds): this is where compilation happens (torch.compile compiles
for the first shape, then once more with dynamic shapes when a second one comes). The timed steps follow:
`--steps` steps at full length and `--steps` at 85% (a length not seen before: a recompilation would show here),
the figure is the median of all of them. Every step is seeded alike and compiled code draws its random numbers as
eager code does, so all modes draw the same masks and dropouts and their losses should agree.

Reported per row: the warm-up seconds (compilation included) and the extra seconds over the eager warm-up; the
median wall and CPU (all threads) seconds per timed step; eager / compiled step-time ratios (> 1: compiled is
faster); how many graphs dynamo captured, its graph breaks and recompilations; the loss of the first full-length
step and its difference from eager's.

    python benchmarks/compile_step.py [--models hubert,zipformer] [--modes none,layers,model] [--steps 2]
                                      [--batch 4] [--seconds 10] [--threads 0] [--timeout 1200] [--json OUT]
                                      [--device cpu|cuda] [--precision fp32|bf16]
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import commit  # noqa: E402
MODELS, MODES = ("hubert", "zipformer", "zipformer_fbank"), ("none", "layers", "model")
WARMUP_FRACTIONS, NEW_FRACTION = (1.0, 0.9, 0.8), 0.85


def worker(name: str, mode: str, a) -> dict:
    "Build one model, compile it (or not), run the warm-up and timed steps; runs inside its own process."
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from step import build, make_batch, run_step
    from k2ssl_lit.presets import compile_model
    torch.manual_seed(0)
    full = make_batch(a.batch, a.seconds, 100)
    def cut(fraction):  # the same utterances, shorter: a new shape
        n = int(full[0].shape[1] * fraction)
        from k2ssl_lit.core import num_frames
        return full[0][:, :n], torch.full_like(full[1], n), full[2][:, :int(num_frames(n))]
    step = build(name, 100)
    step.model.to(a.device).train()
    compile_model(step.model, mode)
    dev = lambda b: tuple(t.to(a.device) for t in b)
    losses = []
    loss_of = step.loss
    def tracked(wav, lens, labels):
        out = loss_of(wav, lens, labels); losses.append(float(out.detach())); return out
    step.loss = tracked
    warm = []
    for f in WARMUP_FRACTIONS:
        warm.append(run_step(step, *dev(cut(f)), a.device, a.precision)[0])
    first_loss = losses[0]
    timed = [run_step(step, *dev(cut(f)), a.device, a.precision) for f in (1.0,) * a.steps + (NEW_FRACTION,) * a.steps]
    from torch._dynamo.utils import counters
    return dict(model=name, mode=mode, warmup_s=warm, warmup_total_s=sum(warm), times_s=[t for t, _ in timed],
                cpu_s=[c for _, c in timed], median_s=statistics.median(t for t, _ in timed),
                median_cpu_s=statistics.median(c for _, c in timed), loss=first_loss,
                graphs=int(counters["stats"].get("unique_graphs", 0)),
                graph_breaks=int(sum(counters["graph_break"].values())),
                threads=torch.get_num_threads())


def run_in_subprocess(name: str, mode: str, a) -> dict:
    args = [sys.executable, __file__, f"--worker={name}:{mode}", f"--steps={a.steps}", f"--batch={a.batch}",
            f"--seconds={a.seconds}", f"--threads={a.threads}", f"--device={a.device}", f"--precision={a.precision}"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore",
           "TORCHINDUCTOR_CACHE_DIR": str(Path(a.cache_dir).resolve() / f"{name}-{mode}")}  # a cold compile every run
    try: r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=a.timeout)
    except subprocess.TimeoutExpired: raise RuntimeError(f"{name}/{mode}: no result within --timeout {a.timeout} s")
    if r.returncode: raise RuntimeError(f"{name}/{mode} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="hubert,zipformer", help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)} ('none' is "
                                                            "always run: it is the baseline)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per length (2 lengths)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--timeout", type=float, default=1200, help="seconds allowed to one (model, mode) process")
    p.add_argument("--cache-dir", default="/tmp/k2ssl_compile_cache", help="inductor's cache (one fresh folder per row)")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        name, mode = a.worker.split(":")
        return print(json.dumps(worker(name, mode, a)))
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    modes = ["none"] + [m.strip() for m in a.modes.split(",") if m.strip() and m.strip() != "none"]
    if bad := [m for m in models if m not in MODELS]: p.error(f"unknown models {bad}; choose from {MODELS}")
    if bad := [m for m in modes if m not in MODES]: p.error(f"unknown modes {bad}; choose from {MODES}")
    if a.steps < 1: p.error("--steps must be >= 1")
    import shutil
    shutil.rmtree(a.cache_dir, ignore_errors=True)
    import torch
    started, load0 = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
    info = dict(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(), torch=torch.__version__,
                python=platform.python_version(), device=a.device, commit=commit())
    print(f"machine: {info['cpus']} CPUs ({info['processor']}), torch {info['torch']}, device {a.device}; commit {info['commit']}")
    print(f"batch: {a.batch} x {a.seconds:g} s ({a.precision}); warm-up: one step at each of "
          f"{', '.join(f'{f:.0%}' for f in WARMUP_FRACTIONS)} of the length; timed: {a.steps} at 100% + {a.steps} at "
          f"{NEW_FRACTION:.0%}; OMP_WAIT_POLICY=PASSIVE; started {started}; load average {load0[0]:.2f}")
    rows, failed = {}, {}
    for name in models:
        for mode in modes:
            try: r = run_in_subprocess(name, mode, a)
            except RuntimeError as e:
                failed[f"{name}/{mode}"] = str(e); print(f"  ... {name}/{mode}: FAILED: {str(e)[-800:]}", flush=True); continue
            rows[(name, mode)] = r
            print(f"  ... {name}/{mode}: warm-up {', '.join(f'{t:.1f}' for t in r['warmup_s'])} s; steps "
                  f"{', '.join(f'{t:.2f}' for t in r['times_s'])} s; {r['graphs']} graphs, {r['graph_breaks']} breaks; "
                  f"loss {r['loss']:.6f}; load average {os.getloadavg()[0]:.2f}", flush=True)
    load1 = os.getloadavg()
    print(f"\n{'model':<16} {'mode':<7} {'warm-up s':>9} {'+ over eager':>12} {'s/step':>7} {'CPU s':>7} "
          f"{'eager/this':>10} {'(CPU)':>6} {'graphs':>6} {'breaks':>6} {'loss - eager':>12}")
    out = []
    for (name, mode), r in rows.items():
        base = rows.get((name, "none"))
        row = dict(r, extra_warmup_s=None, speedup=None, speedup_cpu=None, loss_diff=None)
        if base:
            row.update(extra_warmup_s=r["warmup_total_s"] - base["warmup_total_s"], speedup=base["median_s"] / r["median_s"],
                       speedup_cpu=base["median_cpu_s"] / r["median_cpu_s"], loss_diff=r["loss"] - base["loss"])
        out.append(row)
        f = lambda v, fmt: format(v, fmt) if v is not None else "-"
        print(f"{name:<16} {mode:<7} {r['warmup_total_s']:>9.1f} {f(row['extra_warmup_s'], '12.1f'):>12} "
              f"{r['median_s']:>7.2f} {r['median_cpu_s']:>7.2f} {f(row['speedup'], '10.2f'):>10} "
              f"{f(row['speedup_cpu'], '6.2f'):>6} {r['graphs']:>6} {r['graph_breaks']:>6} {f(row['loss_diff'], '12.1e'):>12}")
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (other processes share the CPUs)")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(dict(machine=info, started=started, load_start=load0, load_end=load1,
                                                batch=a.batch, seconds=a.seconds, steps=a.steps, precision=a.precision,
                                                rows=out, failed=failed), indent=1))
        print(f"figures written to {a.json}")
    if failed: raise SystemExit(f"failed: {', '.join(failed)}")
    return out


if __name__ == "__main__":
    main()
