"""Data-loading throughput: audio seconds per second that the trainer's lhotse pipeline delivers, against what a step consumes.

The loader is the one `k2ssl_lit.train` builds: `prepare_cuts` (labels checked, durations limited) on a manifest,
`make_sampler` (DynamicBucketingSampler, shuffled, the trainer's settings), `SSLDataset("crop", ...)` (load, crop
every cut to the shortest at a multiple of 320 samples, labels alike) and `make_dataloader` over `ResumableBatches`
(epochs run on when the timed batches outlast one). The audio is the embedded eSpeak NG corpus (`cached_corpus`,
all splits, every cut at least 2 s), given random k-means-like labels (k = 100). Each combination of

  input      wave          waveform crops: what every model reads, the waveform-CNN models (Zipformer, HuBERT) and the
                           fbank-frontend one alike, because the fbank-frontend model computes its fbank itself, inside
                           the training step (`WaveformFbankFrontend`); the trainer's loader computes no features
             fbank@loader  the same crops with an 80-bin fbank added in the loader (`SSLDataset(feature_fn=...)`, an
                           option of the dataset that the trainer does not use): what moving fbank into the workers costs
  manifest   eager         the CutSet read into memory (`.to_eager()`)
             lazy          the jsonl.gz manifest read lazily (what `prepare_cuts` returns for a file)
             shar          a lhotse Shar folder (cuts + FLAC audio in tar shards), which `prepare_cuts` also accepts
  workers    0, 1, 2       DataLoader processes (0: loading happens in the main process, between steps)

first takes its warm-up batches untimed: the first (worker start-up, manifest read, sampler buffer fill) and, with
workers, the rest of the 2 per worker that the DataLoader asks for at once (made while the timed loop has not started);
then `--batches` batches or `--max-seconds`, whichever ends first: the figure is the audio delivered (the sum of the
cropped lengths, what the model trains on) over that wall time; the audio decoded (whole cuts, before the crop) is
shown beside it. Then, in this same process and run, one training step (forward + backward, fp32, CPU, 1 warm-up +
`--steps` timed, median) of Zipformer Base, HuBERT Base and Zipformer Base with the fbank frontend, built and timed by
benchmarks/step.py's code on a batch of `--batch` x `--seconds` s (default 4 x 10 s, the size of the loader's 40 s
batches), gives each model's consumption in audio seconds per second; the fbank alone is timed on that batch too, to
show its share of the fbank model's step. For each loader row and model the script prints

  ratio           loader s/s / model s/s: at least 1 means those workers keep up with that model (with 0 workers the
                  two take turns, and the step waits 1/ratio of its own time per batch)
  workers needed  ceil(model s/s / per-worker s/s), per-worker s/s = the row's s/s / max(workers, 1)

A GPU's consumption can be given (`--gpu-audio-seconds-per-second X`, or `--gpu-step-json FILE` written by
`benchmarks/step.py --device cuda --json FILE`); workers needed are then printed for it too, marked as given, not
measured in this run. The loader is measured alone: in training on a CPU the workers share the cores with the step.
On a CPU that other processes also use, pass `--omp-passive` (as for step.py): with OpenMP's spinning threads the
main process's small tensor operations (0-worker rows, the fbank) can slow down tenfold.

    python benchmarks/loader.py                                   # 0.5 h corpus; writes benchmarks/results/loader_<date>.{md,json}
    python benchmarks/loader.py --quick --out /tmp/loader         # a short check: 0.1 h corpus, few batches, 1 x 2 s steps
    python benchmarks/loader.py --gpu-audio-seconds-per-second X  # X: a GPU's audio s/s, measured elsewhere
    python benchmarks/loader.py --gpu-step-json step_h200.json --omp-passive
"""
from __future__ import annotations
import argparse, datetime, gc, json, math, os, platform, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path: sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import commit, cpu_name  # noqa: E402
KINDS = ("wave", "fbank@loader")
MANIFESTS = ("eager", "lazy", "shar")
MODELS = ("zipformer", "hubert", "zipformer_fbank")
NUM_CLASSES = 100
PREFETCH = 2  # DataLoader's default prefetch_factor: batches asked of each worker ahead of use
SOURCES = ("k2ssl_lit/data.py", "k2ssl_lit/train.py", "k2ssl_lit/features.py", "benchmarks/loader.py", "benchmarks/step.py")


def _csv(s: str) -> list[str]: return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus-hours", type=float, default=0.5, help="size of the cached eSpeak NG corpus (all splits used)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--manifests", default=",".join(MANIFESTS), help=f"comma-separated subset of {','.join(MANIFESTS)}")
    p.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--max-duration", type=float, default=None,
                   help="seconds of audio per loader batch (default: --batch x --seconds, the step's batch)")
    p.add_argument("--batches", type=int, default=100, help="timed loader batches per row, after the warm-up batches")
    p.add_argument("--max-seconds", type=float, default=20.0, help="stop a row's timing after this many seconds (>= 2 batches)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--batch", type=int, default=4, help="utterances in the step's batch")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each utterance of the step's batch")
    p.add_argument("--steps", type=int, default=2, help="timed steps per model after 1 warm-up (median)")
    p.add_argument("--gpu-audio-seconds-per-second", type=float, default=None,
                   help="a GPU's consumption (audio s per s of training steps) to size workers for; not measured here")
    p.add_argument("--gpu-step-json", help="the same, from each model of a `benchmarks/step.py --device cuda --json` file")
    p.add_argument("--omp-passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE (for a CPU that others share)")
    p.add_argument("--workdir", help="folder for the manifest and Shar copies (default: a temporary folder)")
    p.add_argument("--quick", action="store_true",
                   help="a short check: 0.1 h corpus, 3 batches of 10 s per row, 1 step of 1 x 2 s per model")
    p.add_argument("--out", help="results prefix: writes PREFIX.md and PREFIX.json "
                                 "(default benchmarks/results/loader_<date>; '-': none)")
    a = p.parse_args(argv)
    if a.quick:
        explicit = {x.split("=")[0] for x in (argv if argv is not None else sys.argv[1:]) if x.startswith("--")}
        for k, v in dict(corpus_hours=0.1, batches=3, max_seconds=5.0, batch=1, seconds=2.0, steps=1, max_duration=10.0).items():
            if "--" + k.replace("_", "-") not in explicit: setattr(a, k, v)
    a.kinds, a.manifests, a.models = _csv(a.kinds), _csv(a.manifests), _csv(a.models)
    for name, got, allowed in (("kinds", a.kinds, KINDS), ("manifests", a.manifests, MANIFESTS), ("models", a.models, MODELS)):
        if not got: p.error(f"--{name}: none given; choose from {','.join(allowed)}")
        if bad := [x for x in got if x not in allowed]: p.error(f"--{name}: unknown {bad}; choose from {','.join(allowed)}")
    try: a.workers = [int(w) for w in _csv(a.workers)]
    except ValueError: p.error(f"--workers must be comma-separated integers, got {a.workers!r}")
    if not a.workers or min(a.workers) < 0: p.error(f"--workers must be integers >= 0, got {a.workers}")
    for name in ("corpus_hours", "seconds", "max_seconds") + (("max_duration",) if a.max_duration is not None else ()):
        if not getattr(a, name) > 0: p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    for name in ("batches", "batch", "steps"):
        if getattr(a, name) < 1: p.error(f"--{name} must be at least 1, got {getattr(a, name)}")
    if a.seconds * 16_000 < 400: p.error(f"--seconds {a.seconds}: shorter than one 25 ms frame")
    if a.gpu_audio_seconds_per_second is not None and a.gpu_step_json:
        p.error("give either --gpu-audio-seconds-per-second or --gpu-step-json, not both")
    if a.gpu_audio_seconds_per_second is not None and not a.gpu_audio_seconds_per_second > 0:
        p.error(f"--gpu-audio-seconds-per-second must be positive, got {a.gpu_audio_seconds_per_second}")
    a.given = {}
    if a.gpu_audio_seconds_per_second is not None:
        a.given["gpu (given)"] = dict(sps=a.gpu_audio_seconds_per_second, source="--gpu-audio-seconds-per-second")
    if a.gpu_step_json:
        try: a.given = given_from_step_json(a.gpu_step_json)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e: p.error(f"--gpu-step-json {a.gpu_step_json}: {e}")
    if a.max_duration is None: a.max_duration = a.batch * a.seconds
    return a


def given_from_step_json(path) -> dict:
    "Each model's consumption (audio s per s) in a benchmarks/step.py --json file, with where it was measured."
    d = json.loads(Path(path).read_text())
    m, audio = d["machine"], d["batch"] * d["seconds"]
    where = f"{m.get('device')}{' (' + m['cuda'] + ')' if m.get('cuda') else ''}, {d.get('precision', 'fp32')}, {d.get('started', '?')}"
    out = {f"{name} [{m.get('device')}, given]": dict(sps=audio / r["median_s"], source=f"{path}: {where}", model=name,
                                                      median_s=r["median_s"], audio_s=audio)
           for name, r in d["models"].items()}
    if not out: raise ValueError("no models in it")
    return out


def machine() -> dict:
    import lhotse, torch
    return dict(platform=platform.platform(), processor=cpu_name(),
                cpus=os.cpu_count(), python=platform.python_version(), torch=torch.__version__, lhotse=lhotse.__version__,
                torch_threads=torch.get_num_threads(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"))


def make_manifests(hours: float, workdir: Path, log) -> tuple[Path, Path, dict, dict]:
    "The cached corpus (all splits, cuts >= 2 s) with random labels: a jsonl.gz manifest, a Shar folder, the durations."
    import numpy as np
    from lhotse import CutSet
    from k2ssl_lit.core import num_frames
    from k2ssl_lit.corpus import cached_corpus, load_corpus
    from k2ssl_lit.data import MIN_DURATION, attach_labels
    t0 = time.perf_counter()
    folder = cached_corpus(hours, 0)
    cuts = CutSet.from_cuts(c for split in load_corpus(folder).values() for c in split if c.duration >= MIN_DURATION)
    rng = np.random.default_rng(0)
    labels = {c.id: rng.integers(0, NUM_CLASSES, num_frames(c.num_samples)) for c in cuts}
    cuts = attach_labels(cuts, labels, num_classes=NUM_CLASSES).to_eager()
    manifest, shar = workdir / "cuts.jsonl.gz", workdir / "shar"
    cuts.to_file(manifest)
    shar.mkdir(exist_ok=True)
    cuts.to_shar(shar, fields={"recording": "flac"}, shard_size=100)
    d = [c.duration for c in cuts]
    info = dict(folder=str(folder), hours_asked=hours, cuts=len(d), audio_s=sum(d), min_s=min(d), max_s=max(d),
                shar_bytes=sum(f.stat().st_size for f in shar.iterdir()), setup_s=time.perf_counter() - t0)
    log(f"corpus: {folder} (all splits, cuts >= {MIN_DURATION:g} s): {len(d)} cuts, {sum(d):.0f} s of audio "
        f"({min(d):.1f}-{max(d):.1f} s each), random labels k={NUM_CLASSES}; written as {manifest.name} and Shar "
        f"({info['shar_bytes'] / 2**20:.1f} MiB of FLAC shards) in {info['setup_s']:.1f} s")
    return manifest, shar, info, {c.id: c.duration for c in cuts}


def open_manifest(form: str, manifest: Path, shar: Path, cfg):
    "The cuts as the trainer's `prepare_cuts` gives them: from the file (lazy), eager in memory, or from Shar."
    from k2ssl_lit.train import prepare_cuts
    cuts, _ = prepare_cuts(shar if form == "shar" else manifest, "benchmark", cfg, NUM_CLASSES)
    return cuts.to_eager() if form == "eager" else cuts


class Epochs:
    "The trainer's `ResumableBatches` for epoch 0, 1, 2, ... in turn: a sampler that does not run out."
    def __init__(self, sampler): self.sampler = sampler
    def __iter__(self):
        from k2ssl_lit.train import ResumableBatches
        epoch = 0
        while True:
            yield from ResumableBatches(self.sampler, epoch)
            epoch += 1


def time_loader(kind: str, form: str, workers: int, manifest: Path, shar: Path, durations: dict, a) -> dict:
    "Delivered audio seconds per wall second of one loader configuration, after its warm-up batches."
    import torch
    from k2ssl_lit.core import SAMPLE_RATE
    from k2ssl_lit.data import SSLDataset, make_dataloader, make_sampler
    from k2ssl_lit.features import FbankConfig, FeatureFn
    from k2ssl_lit.train import TrainConfig
    cfg = TrainConfig(max_duration=a.max_duration)
    t0 = time.perf_counter()
    cuts = open_manifest(form, manifest, shar, cfg)
    prepare_s = time.perf_counter() - t0
    sampler = make_sampler(cuts, cfg.max_duration, cfg.num_buckets, shuffle=True, drop_last=True, seed=cfg.seed,
                           world_size=1, rank=0)
    feature_fn = FeatureFn(FbankConfig(num_mel_bins=80, normalize=False)) if kind == "fbank@loader" else None
    dataset = SSLDataset("crop", cfg.label_key, cfg.max_samples, feature_fn=feature_fn)
    loader = make_dataloader(dataset, Epochs(sampler), workers, generator=torch.Generator().manual_seed(cfg.seed),
                             **({"prefetch_factor": PREFETCH} if workers else {}))
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    first_s = time.perf_counter() - t0
    warm = max(1, PREFETCH * workers)  # the batches asked for at the start, made while the workers started: not timed
    for _ in range(warm - 1): next(it)
    batches, cuts_n, delivered, decoded = 0, 0, 0.0, 0.0
    t0 = time.perf_counter()
    while batches < a.batches and (batches < 2 or time.perf_counter() - t0 < a.max_seconds):
        b = next(it)
        if kind == "fbank@loader": assert b["features"].shape[-1] == 80
        batches += 1; cuts_n += len(b["cut_ids"]); delivered += float(b["audio_lens"].sum()) / SAMPLE_RATE
        decoded += sum(durations[i] for i in b["cut_ids"])  # read whole, then cropped to the batch's shortest
    wall = time.perf_counter() - t0
    del it, loader
    gc.collect()
    sps = delivered / wall
    return dict(kind=kind, manifest=form, workers=workers, prepare_s=prepare_s, first_batch_s=first_s, warmup_batches=warm,
                first_batch_audio_s=float(first["audio_lens"].sum()) / SAMPLE_RATE, batches=batches, cuts=cuts_n,
                delivered_s=delivered, decoded_s=decoded, wall_s=wall, sps=sps, per_worker_sps=sps / max(workers, 1),
                load_after=os.getloadavg()[0])


def time_models(a, log) -> tuple[dict, dict]:
    "Each model's training step (benchmarks/step.py's code, in this process) and the fbank alone, on the same batch."
    import torch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from step import build, make_batch, run_step
    from k2ssl_lit.features import FbankConfig, fbank
    wav, lens, labels = make_batch(a.batch, a.seconds, NUM_CLASSES)
    audio = a.batch * a.seconds
    rows = {}
    for name in a.models:
        torch.manual_seed(0)
        step = build(name, NUM_CLASSES)
        step.model.train()
        warm, _ = run_step(step, wav, lens, labels, "cpu")
        times, cpus = zip(*[run_step(step, wav, lens, labels, "cpu") for _ in range(a.steps)])
        med = statistics.median(times)
        rows[name] = dict(source=step.source, params_M=sum(p.numel() for p in step.model.parameters()) / 1e6,
                          audio_s=audio, warmup_s=warm, times_s=list(times), cpu_s=list(cpus), median_s=med,
                          sps=audio / med, load_after=os.getloadavg()[0])
        log(f"  ... {name}: {med:.2f} s per step of {a.batch} x {a.seconds:g} s (steps {', '.join(f'{t:.2f}' for t in times)}; "
            f"warm-up {warm:.2f}) = {audio / med:.2f} audio s/s; load average {os.getloadavg()[0]:.2f}")
        del step; gc.collect()
    cfg = FbankConfig(num_mel_bins=80, normalize=False)  # as WaveformFbankFrontend computes it
    with torch.no_grad():
        fbank(wav, lens, cfg)
        times = []
        for _ in range(5):
            t0 = time.perf_counter(); fbank(wav, lens, cfg); times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    fb = dict(audio_s=audio, times_s=times, median_s=med, sps=audio / med, threads=torch.get_num_threads())
    if "zipformer_fbank" in rows: fb["share_of_zipformer_fbank_step"] = med / rows["zipformer_fbank"]["median_s"]
    log(f"  ... fbank alone (inside the fbank model's step, {torch.get_num_threads()} threads): {med * 1000:.1f} ms per "
        f"{a.batch} x {a.seconds:g} s = {audio / med:.0f} audio s/s"
        + (f", {100 * fb['share_of_zipformer_fbank_step']:.1f}% of the zipformer_fbank step" if "zipformer_fbank" in rows else ""))
    return rows, fb


def ratio_rows(loader: list[dict], consumers: dict, measured: bool) -> list[dict]:
    "Loader s/s / model s/s and the workers each model needs, for every loader row."
    out = []
    for r in loader:
        for name, c in consumers.items():
            out.append(dict(kind=r["kind"], manifest=r["manifest"], workers=r["workers"], model=name, measured_here=measured,
                            loader_sps=r["sps"], model_sps=c["sps"], ratio=r["sps"] / c["sps"],
                            workers_needed=math.ceil(c["sps"] / r["per_worker_sps"])))
    return out


def main(argv=None):
    a = parse_args(argv)
    if a.omp_passive: os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch starts OpenMP
    import logging, warnings
    sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not
    lines = []
    def log(s=""): print(s, flush=True); lines.append(s)
    info, rev, load0 = machine(), commit(*SOURCES), os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    log(f"machine: {info['processor']}, {info['cpus']} CPUs, {info['platform']}; python {info['python']}, "
        f"torch {info['torch']} ({info['torch_threads']} threads), lhotse {info['lhotse']}; OMP_WAIT_POLICY {info['omp_wait_policy']}")
    log(f"commit {rev}; started {started}")
    log(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} (1/5/15 min; other processes share the CPUs)")
    logging.getLogger("k2ssl_lit").setLevel(logging.ERROR)  # make_sampler's small-set notice, once per row
    warnings.filterwarnings("ignore", category=UserWarning, module="lhotse")
    with tempfile.TemporaryDirectory(prefix="k2ssl-loader-") as tmp:
        workdir = Path(a.workdir or tmp); workdir.mkdir(parents=True, exist_ok=True)
        manifest, shar, corpus, durations = make_manifests(a.corpus_hours, workdir, log)
        log(f"loader: batches of {a.max_duration:g} s (the trainer's sampler and crop dataset); "
            f"{a.batches} batches or {a.max_seconds:g} s per row, after max(1, {PREFETCH} x workers) warm-up batches")
        loader = []
        for kind in a.kinds:
            for form in a.manifests:
                for w in a.workers:
                    r = time_loader(kind, form, w, manifest, shar, durations, a)
                    loader.append(r)
                    log(f"  ... {kind:<12} {form:<5} {w} workers: {r['sps']:8.1f} audio s/s ({r['batches']} batches, "
                        f"{r['delivered_s']:.0f} s in {r['wall_s']:.2f} s; first batch {r['first_batch_s']:.2f} s); "
                        f"load average {r['load_after']:.2f}")
    log(f"models: one training step each (fp32, forward + backward, CPU), {a.batch} x {a.seconds:g} s, 1 warm-up + "
        f"median of {a.steps}")
    models, fb = time_models(a, log)
    load1 = os.getloadavg()
    ratios = ratio_rows(loader, models, True) + ratio_rows(loader, a.given, False)
    log(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")

    table = ["", "Loader throughput (audio seconds delivered per wall second) and, per model, ratio = loader s/s / model s/s",
             "with workers needed = ceil(model s/s / (loader s/s / max(workers, 1))); all measured in this run:", ""]
    names = list(models)
    table.append("| input | manifest | workers | batches | decoded s | delivered s | wall s | loader s/s | first batch s | "
                 + " | ".join(f"{n} ratio (workers needed)" for n in names) + " |")
    table.append("|" + "---|" * (9 + len(names)))
    for r in loader:
        cells = [f"{q['ratio']:.2f} ({q['workers_needed']})" for q in ratios
                 if q["measured_here"] and (q["kind"], q["manifest"], q["workers"]) == (r["kind"], r["manifest"], r["workers"])]
        table.append(f"| {r['kind']} | {r['manifest']} | {r['workers']} | {r['batches']} | {r['decoded_s']:.1f} | {r['delivered_s']:.1f} | "
                     f"{r['wall_s']:.2f} | {r['sps']:.1f} | {r['first_batch_s']:.2f} | " + " | ".join(cells) + " |")
    table += ["", "| model | params (M) | s per step | audio s per step | model s/s |", "|---|---|---|---|---|"]
    for n, m in models.items():
        table.append(f"| {n} | {m['params_M']:.1f} | {m['median_s']:.2f} | {m['audio_s']:g} | {m['sps']:.2f} |")
    table.append(f"| fbank alone (part of zipformer_fbank's step) | - | {fb['median_s']:.4f} | {fb['audio_s']:g} | {fb['sps']:.1f} |")
    if a.given:
        table += ["", "Given consumption, NOT measured in this run (no GPU here): workers needed from this run's loader rows",
                  "", "| input | manifest | workers | loader s/s | " + " | ".join(f"{n} ({c['sps']:.1f} s/s) ratio (workers needed)"
                                                                      for n, c in a.given.items()) + " |",
                  "|" + "---|" * (4 + len(a.given))]
        for r in loader:
            cells = [f"{q['ratio']:.3f} ({q['workers_needed']})" for q in ratios
                     if not q["measured_here"] and (q["kind"], q["manifest"], q["workers"]) == (r["kind"], r["manifest"], r["workers"])]
            table.append(f"| {r['kind']} | {r['manifest']} | {r['workers']} | {r['sps']:.1f} | " + " | ".join(cells) + " |")
        for n, c in a.given.items(): table.append(f"\n{n}: {c['source']}")
    for l in table: log(l)

    result = dict(machine=info, commit=rev, started=started, load_start=load0, load_end=load1, quick=a.quick,
                  args={k: v for k, v in vars(a).items() if k != "given"}, corpus=corpus, loader=loader, models=models,
                  fbank_in_model=fb, given=a.given, ratios=ratios)
    if a.out != "-":
        prefix = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"loader_{datetime.date.today()}"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{prefix}.json").write_text(json.dumps(result, indent=1))
        Path(f"{prefix}.md").write_text(
            f"# Data-loading throughput against training-step consumption, {started[:10]}\n\n"
            f"Output of `python benchmarks/loader.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
            f"figures in {prefix.name}.json.\n\n```\n" + "\n".join(lines[: len(lines) - len(table)]) + "\n```\n"
            + "\n".join(table) + "\n")
        print(f"written to {prefix}.md and {prefix}.json")
    return result


if __name__ == "__main__":
    main()
