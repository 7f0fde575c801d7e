"""GPU check in one command: the CUDA tests, the step benchmark in bf16 for every model, and k-means assignment on the
GPU, each under its own timeout so that the whole stays within 8 minutes; one dated results file.

    benchmarks/gpu_check.sh                      # on a GPU machine: writes benchmarks/results/gpu_check_<YYYY-MM-DD>.md
    benchmarks/gpu_check.sh --icefall DIR        # also the k2SSL recipes' own models as anchors (see below)
    benchmarks/gpu_check.sh --dry-run            # the same parts on the CPU at small sizes (about 3 minutes on 2 cores);
                                                 # writes /tmp/gpu_check_<YYYY-MM-DD>_cpu_dryrun.md
    benchmarks/gpu_check.sh --parts tests,kmeans --out FILE   # a subset, elsewhere

The parts (commands as run; `--dry-run` in brackets):
  tests   K2SSL_TEST_DEVICE=cuda [cpu] pytest -q -rs tests/test_cuda.py: autocast bf16/fp16 training steps, SDPA against
          plain attention, gradcheck of the custom autograd functions, nearest_centroid on the device, a one-process
          nccl [gloo] group running the trainer for 2 steps
  step    benchmarks/step.py --device cuda [cpu] --precision bf16 --models all [--batch 1 --seconds 2 --steps 1]:
          one pre-training step of every model (torchaudio HuBERT, our HuBERT, Zipformer at batch count 100000 and 0,
          Zipformer with fbank, and with --icefall the recipes' HuBERT-CE and Zipformer), with the ratios of that run
  kmeans  benchmarks/kmeans_assign.py --device cuda [cpu] --frames 1000000 [20000] --dim 768 --k 500 --repeats 3 [1]:
          exact assignment on the GPU against scikit-learn's predict on the CPU, labels checked against float64
Extra parts, run only when named (`--parts tests,step,kmeans,loader,compile` or `--parts all`; their timeouts are
added to the budget):
  loader  benchmarks/loader.py --kinds=wave --models=zipformer --corpus-hours=0.1 [--quick] --gpu-step-json STEP:
          audio seconds per second that the lhotse loader delivers on this machine's CPUs (0/1/2 workers; eager, lazy,
          Shar), against the GPU steps the step part just measured: how many loader workers the GPU needs
  compile benchmarks/compile_step.py --device cuda --precision bf16 --models hubert,zipformer --modes layers
          [--device cpu --models hubert --batch 1 --seconds 2 --steps 1]: torch.compile against eager, same run

The icefall anchors need an icefall tree outside the repository (nothing of icefall is committed): `--icefall DIR`, or
$ICEFALL_DIR, or `.dev/icefall` when that folder exists (.dev/ is git-ignored; a remote run must carry it). To make one
(about 2 MB): `git clone https://github.com/k2-fsa/icefall && mkdir -p .dev/icefall && git -C icefall archive 36e0420
egs/librispeech/SSL egs/librispeech/ASR/zipformer | tar -x -C .dev/icefall`. Without it the results file says that the
anchors were not run.

The results file holds the machine (GPU, driver, torch, CUDA, cuDNN), the commit, each part's command, status, time
and output, and a summary of the figures. A part that fails or runs out of time is recorded as such and the next part
runs; the exit status is 0 only when every part passed. Run from the repository root with the project installed
(`pip install -e .[dev]`); benchmarks/gpu_check.sh picks .venv/bin/python when it exists.
"""
from __future__ import annotations
import argparse, datetime, json, os, platform, re, shlex, signal, subprocess, sys, tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path: sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import commit, cpu_name  # noqa: E402
PARTS = ("tests", "step", "kmeans")                 # the 8-minute check
EXTRA_PARTS = ("loader", "compile")                 # only when asked for (--parts ...,loader,compile or --parts all)
BUDGET_S, DRY_BUDGET_S = 480, 900                    # the whole check: 8 minutes on a GPU; the CPU dry run, 15
TIMEOUTS = {"tests": 110, "step": 220, "kmeans": 130,  # seconds per part on a GPU (sum + overhead < BUDGET_S)
            "loader": 90, "compile": 360}            # extra parts: their time is added to the budget
DRY_TIMEOUTS = {"tests": 240, "step": 420, "kmeans": 120,  # the CPU dry run: correctness of the script, not figures
                "loader": 120, "compile": 300}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="GPU check in one command: the CUDA tests, the step benchmark in bf16 for every "
                                "model and k-means assignment on the GPU, within 8 minutes; one dated results file.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--dry-run", action="store_true", help="run the same parts on the CPU at small sizes")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS + EXTRA_PARTS)}, or 'all' (default: {','.join(PARTS)})")
    p.add_argument("--icefall", default=None, help="icefall tree for the recipe anchors (default: $ICEFALL_DIR, .dev/icefall)")
    p.add_argument("--out", default=None, help="results file (default: benchmarks/results/gpu_check_<date>.md; "
                                               "with --dry-run /tmp/gpu_check_<date>_cpu_dryrun.md)")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for the whole check, parts cut to fit (default {BUDGET_S}; dry run {DRY_BUDGET_S})")
    p.add_argument("--kmeans-frames", type=int, default=None, help="frames for the k-means part (default 1M; dry run 20k)")
    a = p.parse_args(argv)
    a.parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    if a.parts == ["all"]: a.parts = list(PARTS + EXTRA_PARTS)
    if bad := [x for x in a.parts if x not in PARTS + EXTRA_PARTS]:
        p.error(f"unknown parts {bad}; choose from {','.join(PARTS + EXTRA_PARTS)} or all")
    if not a.parts: p.error("no parts to run")
    if a.icefall is None:
        a.icefall = os.environ.get("ICEFALL_DIR") or (str(ROOT / ".dev" / "icefall") if (ROOT / ".dev" / "icefall").is_dir() else None)
    if a.icefall and not (Path(a.icefall) / "egs" / "librispeech" / "SSL").is_dir():
        p.error(f"--icefall {a.icefall}: no egs/librispeech/SSL there (see the usage at the top of this script)")
    if a.budget is None:
        extra = sum((DRY_TIMEOUTS if a.dry_run else TIMEOUTS)[x] for x in a.parts if x in EXTRA_PARTS)
        a.budget = (DRY_BUDGET_S if a.dry_run else BUDGET_S) + extra
    if a.budget <= 0: p.error("--budget must be > 0")
    return a


def results_path(a, today: str) -> Path:
    "Where the results go: --out, else a dated file (a dry run's named as such and kept out of benchmarks/results)."
    if a.out: return Path(a.out)
    if a.dry_run: return Path(tempfile.gettempdir()) / f"gpu_check_{today}_cpu_dryrun.md"
    return ROOT / "benchmarks" / "results" / f"gpu_check_{today}.md"


def commands(a) -> dict[str, tuple[list[str], dict]]:
    "Each part's command line and extra environment."
    py, dev = sys.executable, "cpu" if a.dry_run else "cuda"
    frames = a.kmeans_frames or (20_000 if a.dry_run else 1_000_000)
    step = [py, "benchmarks/step.py", f"--device={dev}", "--precision=bf16", "--models=all"]
    if a.icefall: step.append(f"--icefall={a.icefall}")
    if a.dry_run: step += ["--batch=1", "--seconds=2", "--steps=1", "--omp-passive"]
    return {
        "tests": ([py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                  {"K2SSL_TEST_DEVICE": dev}),
        "step": (step, {}),
        "kmeans": ([py, "benchmarks/kmeans_assign.py", f"--device={dev}", f"--frames={frames}", "--dim=768", "--k=500",
                    f"--repeats={1 if a.dry_run else 3}", "--out=-"], {}),
        # the lhotse loader on this machine's CPUs against the GPU steps of the step part (workers a GPU needs);
        # the step part adds --gpu-step-json when it ran
        "loader": ([py, "benchmarks/loader.py", "--kinds=wave", "--models=zipformer", "--steps=1", "--max-seconds=5",
                    "--corpus-hours=0.1", "--omp-passive", "--out=-"] + (["--quick"] if a.dry_run else []), {}),
        "compile": ([py, "benchmarks/compile_step.py", f"--device={dev}", "--modes=layers"]
                    + (["--models=hubert", "--batch=1", "--seconds=2", "--steps=1"] if a.dry_run
                       else ["--precision=bf16", "--models=hubert,zipformer", "--timeout=200"]), {}),
    }


def run_part(cmd: list[str], env: dict, timeout: float) -> dict:
    "Run one part with its output shown live and kept; kill its whole process group at the timeout."
    t0, lines = time.perf_counter(), []
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    def pump():
        for line in proc.stdout:
            print("    " + line, end="", flush=True); lines.append(line.rstrip("\n"))
    reader = threading.Thread(target=pump, daemon=True); reader.start()
    try: rc, timed_out = proc.wait(timeout=max(timeout, 1)), False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL); rc, timed_out = proc.wait(), True
    reader.join(5)
    status = "timed out" if timed_out else ("passed" if rc == 0 else f"failed (exit {rc})")
    return dict(status=status, rc=rc, seconds=time.perf_counter() - t0, timeout=timeout, output=lines)


def machine(dry_run: bool) -> list[str]:
    "Lines describing the machine: GPU, driver, torch, CUDA, cuDNN, CPU."
    import torch
    out = []
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if smi.returncode == 0 and smi.stdout.strip(): out += [f"GPU (nvidia-smi): {l.strip()}" for l in smi.stdout.strip().splitlines()]
    except (OSError, subprocess.TimeoutExpired): pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.append(f"GPU (torch): {torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.0f} GiB, "
                   f"compute capability {props.major}.{props.minor}, {torch.cuda.device_count()} device(s)")
    elif not dry_run: out.append("GPU: none visible to torch")
    else: out.append("GPU: none (CPU dry run)")
    out.append(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
               f"python {platform.python_version()}")
    out.append(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    return out


def summarise(part: str, r: dict, step_json: Path | None) -> list[str]:
    "The figures worth reading first, from a part's output (and the step benchmark's JSON)."
    out = r["output"]
    if part == "tests":
        return [l for l in out if re.search(r"\d+ (passed|failed|errors?|skipped)", l)][-1:] or ["(no pytest summary line)"]
    if part == "kmeans":
        return [l for l in out if l.startswith(("labels identical", "labels differ", "time, median", "speed ratio"))]
    if part == "step" and step_json and step_json.exists():
        d = json.loads(step_json.read_text())
        lines = [f"{'model':<18} {'source':<9} {'s/step':>7} {'GPU GB' if d['machine']['device'].startswith('cuda') else 'RSS GB':>7}"]
        for name, m in d["models"].items():
            mem = m.get("cuda_peak_gb", m["peak_net_gb"])
            lines.append(f"{name:<18} {m['source']:<9} {m['median_s']:>7.3f} {mem:>7.2f}")
        for x in d["aims"]:
            aim = f"aim {x['op']} {x['aim']}x: {'met' if x['met'] else 'MISSED'}" if x["aim"] is not None else "(recipes' models)"
            lines.append(f"{x['name']:<44} {x['value']:5.2f}x  {aim}")
        return lines
    return []


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch
    if not a.dry_run and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; on a CPU use --dry-run", file=sys.stderr)
        return 2
    now = datetime.datetime.now(datetime.timezone.utc)
    out_path = results_path(a, now.strftime("%Y-%m-%d"))
    deadline = time.monotonic() + a.budget
    timeouts = DRY_TIMEOUTS if a.dry_run else TIMEOUTS
    cmds, results = commands(a), {}
    step_json = Path(tempfile.mkdtemp(prefix="gpu_check_")) / "step.json"
    if "step" in a.parts: cmds["step"][0].append(f"--json={step_json}")
    if "step" in a.parts and not a.dry_run: cmds["loader"][0].append(f"--gpu-step-json={step_json}")
    info = machine(a.dry_run)
    for l in info: print(l)
    for part in a.parts:
        cmd, env = cmds[part]
        left = deadline - time.monotonic() - 5  # keep a few seconds to write the results
        if left < 10:
            results[part] = dict(status="not run (no time left)", rc=None, seconds=0.0, timeout=0, output=[]); continue
        timeout = min(timeouts[part], left)
        shown = " ".join(f"{k}={v}" for k, v in env.items()) + (" " if env else "") + shlex.join(
            [Path(c).name if c == sys.executable else c for c in cmd])
        print(f"\n== {part}: {shown}  (timeout {timeout:.0f} s)", flush=True)
        results[part] = r = run_part(cmd, env, timeout)
        r["command"] = shown
        print(f"== {part}: {r['status']} in {r['seconds']:.0f} s", flush=True)

    total = sum(r["seconds"] for r in results.values())
    title = "GPU check" + (" - CPU DRY RUN (no GPU; small sizes; not GPU figures)" if a.dry_run else "")
    lines = [f"# {title}, {now:%Y-%m-%d %H:%M} UTC", "",
             f"Written by `benchmarks/gpu_check.py {shlex.join(argv if argv is not None else sys.argv[1:])}`; "
             f"commit {commit('k2ssl_lit', 'benchmarks', 'tests')}; {total:.0f} s in all (budget {a.budget:.0f} s).", "", "## Machine", ""]
    lines += [f"- {l}" for l in info]
    lines += [f"- icefall anchors: {'from ' + a.icefall if a.icefall else 'not run (no icefall tree: --icefall DIR)'}", "",
              "## Summary", "", "| part | status | seconds (timeout) |", "| --- | --- | --- |"]
    lines += [f"| {p} | {r['status']} | {r['seconds']:.0f} ({r['timeout']:.0f}) |" for p, r in results.items()]
    for part, r in results.items():
        lines += ["", f"## {part}", ""]
        if r.get("command"): lines += [f"`{r['command']}`: {r['status']} in {r['seconds']:.0f} s", ""]
        else: lines += [r["status"], ""]
        if figs := summarise(part, r, step_json if part == "step" else None):
            lines += ["Figures:", "", "```", *figs, "```", ""]
        if r["output"]:
            shown = r["output"] if len(r["output"]) <= 400 else ["[... first lines left out ...]"] + r["output"][-400:]
            lines += ["Output:", "", "```", *shown, "```"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    print(f"\n{title}: " + ", ".join(f"{p} {r['status']}" for p, r in results.items()) + f"; {total:.0f} s; written to {out_path}")
    return 0 if all(r["status"] == "passed" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
