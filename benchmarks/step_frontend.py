"""The waveform CNN frontend: forward + backward on 4 x 10 s, matrix-product convolutions against plain Conv1d.

WaveformCNN (k2ssl_lit.hubert) computes its six 512 -> 512 convolutions as one matrix product each over unfolded
windows, channel-last (conv_impl="matmul"); conv_impl="conv1d" is the plain nn.Conv1d stack, the reference. Both
share their parameters. The script checks that they give the same frames and gradients, then times a
forward + backward pass (loss: mean square of the frames) of each, alternating, and prints the best and median wall
and CPU times and the ratio conv1d / matmul.

PyTorch's CPU allocator takes every large tensor fresh from the kernel, and the page faults of those ~5 GB per step
cost seconds of system time. `THP_MEM_ALLOC_ENABLE=1` (read by PyTorch when it first allocates) backs large tensors
with 2 MB pages; `--allocators` runs the measurement once without and once with it, each in a fresh process.

    python benchmarks/step_frontend.py [--batch 4] [--seconds 10] [--reps 3] [--threads 0] [--allocators]
"""
import argparse, os, resource, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, machine  # noqa: E402


def measure(batch: int, seconds: float, reps: int, threads: int):
    import torch
    try: import k2ssl_lit  # noqa: F401
    except ImportError: sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
    from k2ssl_lit.hubert import CNNConfig, WaveformCNN

    if threads: torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {impl: WaveformCNN(CNNConfig(conv_impl=impl)) for impl in ("matmul", "conv1d")}
    models["conv1d"].load_state_dict(models["matmul"].state_dict())
    wav = torch.randn(batch, int(seconds * 16_000))

    def step(model):
        for p in model.parameters(): p.grad = None
        frames, _ = model(wav)
        frames.pow(2).mean().backward()
        return frames.detach(), [p.grad for p in model.parameters()]

    (y1, g1), (y2, g2) = step(models["matmul"]), step(models["conv1d"])
    grad_err = max(((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item() for a, b in zip(g1, g2))
    print(f"machine: {machine()}; commit {commit()}")
    print(f"{batch} x {seconds:g} s, {torch.get_num_threads()} threads, THP_MEM_ALLOC_ENABLE="
          f"{os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}: frames max |diff| {(y1 - y2).abs().max().item():.1e}, "
          f"gradients max relative diff {grad_err:.1e}")

    times = {impl: [] for impl in models}
    for _ in range(reps):
        for impl, model in models.items():
            r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
            step(model)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            times[impl].append((time.perf_counter() - t0, time.process_time() - c0, r1.ru_stime - r0.ru_stime))
    for impl, ts in times.items():
        wall, cpu, sys_ = zip(*ts)
        print(f"  {impl:>6}: wall best {min(wall):6.2f} s, median {statistics.median(wall):6.2f} s | "
              f"CPU best {min(cpu):6.2f} s (system {min(sys_):5.2f} s)")
    best = {impl: min(w for w, _, _ in ts) for impl, ts in times.items()}
    print(f"  conv1d / matmul (best wall): {best['conv1d'] / best['matmul']:.2f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4, help="utterances per batch")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each utterance")
    p.add_argument("--reps", type=int, default=3, help="timed passes of each implementation")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--allocators", action="store_true", help="run without and with THP_MEM_ALLOC_ENABLE=1")
    a = p.parse_args(argv)
    if not a.allocators: return measure(a.batch, a.seconds, a.reps, a.threads)
    args = [sys.executable, __file__, f"--batch={a.batch}", f"--seconds={a.seconds}", f"--reps={a.reps}",
            f"--threads={a.threads}"]
    for thp in ("0", "1"):
        subprocess.run(args, env={**os.environ, "THP_MEM_ALLOC_ENABLE": thp}, check=True)


if __name__ == "__main__":
    main()
