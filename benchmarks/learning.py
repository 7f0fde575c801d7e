"""Learning at toy size over several seeds: runs `k2ssl-demo` once per seed and writes the mean ± standard deviation
of every figure it reports, with the machine and the commit, to benchmarks/results/.

    python benchmarks/learning.py --seeds 1 2 3                     # the default command (15 minutes each)
    python benchmarks/learning.py --seeds 1 2 3 --minutes 30
    python benchmarks/learning.py --seeds 1 2 3 --compare-hubert    # the tiny HuBERT on the same budget

Each seed synthesises its own corpus (the seed picks the sentences and voices), so the spread covers the data as
well as the initialisation. Aims are checked on the means and printed as met / missed, as measured.
"""
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

import torch

from k2ssl_lit.demo import DemoConfig, run_demo

ROOT = Path(__file__).resolve().parent.parent


def figures(r: dict) -> dict[str, float]:
    "The numeric figures of one demo result, flattened to name -> value."
    f = {f"units/{n}/test_pnmi": q["pnmi"] for n, q in r["baselines"].items()}
    for n, l in r["layers"].items():
        f[f"units/{n}/best_layer"] = l["best_layer"]
        f[f"units/{n}/test_pnmi"] = l["test_pnmi"]
        f[f"units/{n}/random_init_test_pnmi"] = l["random_init_test_pnmi"]
    for n, p in r["pretrain"].items():
        for k in ("steps", "seconds_per_step", "dev_masked_acc", "dev_unmasked_acc"): f[f"pretrain/{n}/{k}"] = p[k]
    for n, c in r["finetune"].items():
        for k in ("steps", "seconds_per_step", "test_cer", "test_wer", "test_blank_share", "test_empty_share"):
            f[f"ctc/{n}/{k}"] = c[k]
        f[f"ctc/{n}/blank_phase"] = float(c["blank_phase"])
    f["minutes/total"] = r["seconds"]["total"] / 60
    return f


def aims(mean: dict, minutes: float) -> list[tuple[str, bool]]:
    "The learning aims for the Zipformer, checked on the means over seeds."
    z, out = "zipformer_tiny", []
    if f"units/{z}/test_pnmi" in mean:
        p = mean[f"units/{z}/test_pnmi"]
        if minutes <= 15:
            out.append((f"iteration-2 units PNMI {p:.3f} >= 0.55", p >= 0.55))
        out += [(f"units PNMI {p:.3f} above MFCC {mean['units/mfcc/test_pnmi']:.3f} and fbank "
                 f"{mean['units/fbank/test_pnmi']:.3f}", p > max(mean["units/mfcc/test_pnmi"], mean["units/fbank/test_pnmi"])),
                (f"units PNMI {p:.3f} >= random init {mean[f'units/{z}/random_init_test_pnmi']:.3f} + 0.05",
                 p >= mean[f"units/{z}/random_init_test_pnmi"] + 0.05)]
    if f"ctc/{z}/test_cer" in mean:
        cer, scratch, bar = mean[f"ctc/{z}/test_cer"], mean["ctc/scratch/test_cer"], 0.40 if minutes <= 15 else 0.30
        out += [(f"CTC test CER {cer:.3f} <= {bar:.2f}", cer <= bar),
                (f"CTC test CER {cer:.3f} at least 0.05 below scratch {scratch:.3f}", cer <= scratch - 0.05)]
        if minutes <= 15: out.append((f"WER {mean[f'ctc/{z}/test_wer']:.3f} < 0.9", mean[f"ctc/{z}/test_wer"] < 0.9))
    h = "hubert_tiny"
    if f"units/{h}/test_pnmi" in mean and f"units/{z}/test_pnmi" in mean:
        out += [(f"Zipformer units PNMI {mean[f'units/{z}/test_pnmi']:.3f} >= HuBERT {mean[f'units/{h}/test_pnmi']:.3f}",
                 mean[f"units/{z}/test_pnmi"] >= mean[f"units/{h}/test_pnmi"]),
                (f"Zipformer CER {mean[f'ctc/{z}/test_cer']:.3f} <= HuBERT {mean[f'ctc/{h}/test_cer']:.3f}",
                 mean[f"ctc/{z}/test_cer"] <= mean[f"ctc/{h}/test_cer"])]
    return out


def machine() -> str:
    cpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    return f"{platform.machine()}, {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nbs", "k2ssl_lit"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except OSError: return "unknown"


def summarize(runs: dict[int, dict], minutes: float, presets, rev: str) -> tuple[dict, str]:
    per_seed = {s: figures(r) for s, r in runs.items()}
    names = list(next(iter(per_seed.values())))
    stats = {}
    for n in names:
        vals = [f[n] for f in per_seed.values() if n in f]
        stats[n] = dict(mean=statistics.fmean(vals), sd=statistics.stdev(vals) if len(vals) > 1 else float("nan"),
                        values=vals)
    mean = {n: s["mean"] for n, s in stats.items()}
    checks = aims(mean, minutes)
    lines = [f"# Learning at toy size: `k2ssl-demo --minutes {minutes:g}`" + (" --compare-hubert" if len(presets) > 1 else ""),
             "", f"{time.strftime('%Y-%m-%d')}; commit {rev}; {machine()}; seeds {list(runs)} "
             f"(each seed its own corpus and initialisation); mean ± sd over seeds, then the value of each seed.", "",
             "| figure | mean ± sd | per seed |", "|---|---|---|"]
    for n, s in stats.items():
        lines.append(f"| {n} | {s['mean']:.3f} ± {s['sd']:.3f} | {', '.join(f'{v:.3f}' for v in s['values'])} |")
    lines += ["", "## Aims (on the means)", ""] + [f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in checks]
    return dict(minutes=minutes, presets=list(presets), seeds=list(runs), machine=machine(), commit=rev,
                date=time.strftime("%Y-%m-%d"), stats=stats, aims=[dict(aim=t, met=ok) for t, ok in checks]), "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--compare-hubert", action="store_true")
    ap.add_argument("--work", default="exp/learning", help="demo output folders, one per seed")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    presets = ("zipformer_tiny", "hubert_tiny") if a.compare_hubert else ("zipformer_tiny",)
    tag = f"learning_{time.strftime('%Y-%m-%d')}_{a.minutes:g}min" + ("_hubert" if a.compare_hubert else "")
    runs, revs, rev = {}, {}, commit()  # the code that runs: read before the first seed
    for seed in a.seeds:
        out = Path(a.work) / f"{tag}_seed{seed}"
        done = out / "results.json"
        if done.exists():  # a finished seed is reused, with the commit that made it
            runs[seed] = json.loads(done.read_text()); revs[seed] = (out / "commit.txt").read_text().strip()
            print(f"seed {seed}: reusing {done} (commit {revs[seed]})"); continue
        print(f"== seed {seed}", flush=True)
        out.mkdir(parents=True, exist_ok=True); (out / "commit.txt").write_text(rev); revs[seed] = rev
        runs[seed] = run_demo(DemoConfig(out=str(out), minutes=a.minutes, seed=seed, presets=presets))
    data, md = summarize(runs, a.minutes, presets, ", ".join(sorted(set(revs.values()))))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"{tag}.json").write_text(json.dumps(data, indent=1))
    (Path(a.out) / f"{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__": main()
