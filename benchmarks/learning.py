"""Learning at toy size over several seeds: runs `k2ssl-demo` once per seed and writes the mean ± standard deviation
of every figure it reports, with the machine and the commit, to benchmarks/results/.

    python benchmarks/learning.py --seeds 1 2 3                     # the default command (15 minutes each)
    python benchmarks/learning.py --seeds 1 2 3 --minutes 30
    python benchmarks/learning.py --seeds 1 2 3 --compare-hubert    # the tiny HuBERT on the same budget
    python benchmarks/learning.py --seeds 1 2 3 --mt4ssl            # k-means only vs k-means + MT4SSL's online targets

Each seed synthesises its own corpus (the seed picks the sentences and voices), so the spread covers the data as
well as the initialisation. Aims are checked on the means and printed as met / missed, as measured.

With --mt4ssl every seed's demo pre-trains the tiny Zipformer twice in the same minutes, on the k-means units alone
and with MT4SSL's EMA teacher as well (`k2ssl-demo --mt4ssl`: the pre-training and fine-tuning budgets are shared,
so at --minutes 15 each arm pre-trains for 3 minutes, at --minutes 30 for 6, the default demo's length). Both arms
see the same corpus, labels and seed; the report adds a paired table (online targets minus k-means only, per seed)
of dev masked accuracy, iteration-2 unit PNMI, CTC test CER and the cost per step. The extra cost per step on one
fixed batch, time and peak memory, is benchmarks/mt4ssl_step.py's.
"""
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path

import torch

from k2ssl_lit.demo import DemoConfig, run_demo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path: sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import commit  # noqa: E402


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


PAIRED = (("pretrain/{}/dev_masked_acc", "dev masked accuracy"), ("units/{}/test_pnmi", "iteration-2 units PNMI (test)"),
          ("ctc/{}/test_cer", "CTC test CER"), ("pretrain/{}/seconds_per_step", "pre-training s/step"),
          ("pretrain/{}/steps", "pre-training steps"))


def paired(per_seed: dict[int, dict], base: str = "zipformer_tiny", arm: str = "zipformer_tiny+mt4ssl") -> tuple[list, str]:
    "Online targets against k-means only, seed by seed: each figure of both arms and their difference."
    rows, lines = [], ["", f"## {arm} against {base} (paired by seed; difference = {arm} - {base})", "",
                       f"| figure | {base} | {arm} | difference, mean ± sd | per seed |", "|---|---|---|---|---|"]
    for key, label in PAIRED:
        a = [f.get(key.format(base)) for f in per_seed.values()]
        b = [f.get(key.format(arm)) for f in per_seed.values()]
        if None in a or None in b: continue
        d = [y - x for x, y in zip(a, b)]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else float("nan")
        rows.append(dict(figure=label, base=a, arm=b, difference=d))
        lines.append(f"| {label} | {statistics.fmean(a):.3f} ± {sd(a):.3f} | {statistics.fmean(b):.3f} ± {sd(b):.3f} | "
                     f"{statistics.fmean(d):+.3f} ± {sd(d):.3f} | {', '.join(f'{v:+.3f}' for v in d)} |")
    if rows:
        t = next((r for r in rows if r["figure"] == "pre-training s/step"), None)
        if t: lines += ["", f"Extra time per pre-training step with the teacher: x{statistics.fmean(t['arm']) / statistics.fmean(t['base']):.2f} "
                            "(the demo's mean s/step, same run, same machine)."]
    return rows, "\n".join(lines)


def summarize(runs: dict[int, dict], minutes: float, presets, rev: str, objectives=("kmeans",)) -> tuple[dict, str]:
    per_seed = {s: figures(r) for s, r in runs.items()}
    names = list(next(iter(per_seed.values())))
    stats = {}
    for n in names:
        vals = [f[n] for f in per_seed.values() if n in f]
        stats[n] = dict(mean=statistics.fmean(vals), sd=statistics.stdev(vals) if len(vals) > 1 else float("nan"),
                        values=vals)
    mean = {n: s["mean"] for n, s in stats.items()}
    checks = aims(mean, minutes)
    flags = (" --compare-hubert" if len(presets) > 1 else "") + (" --mt4ssl" if "mt4ssl" in objectives else "")
    lines = [f"# Learning at toy size: `k2ssl-demo --minutes {minutes:g}{flags}`",
             "", f"{time.strftime('%Y-%m-%d')}; commit {rev}; {machine()}; seeds {list(runs)} "
             f"(each seed its own corpus and initialisation); mean ± sd over seeds, then the value of each seed.", "",
             "| figure | mean ± sd | per seed |", "|---|---|---|"]
    for n, s in stats.items():
        lines.append(f"| {n} | {s['mean']:.3f} ± {s['sd']:.3f} | {', '.join(f'{v:.3f}' for v in s['values'])} |")
    lines += ["", "## Aims (on the means)", ""] + [f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in checks]
    pairs, text = paired(per_seed) if "mt4ssl" in objectives else ([], "")
    return dict(minutes=minutes, presets=list(presets), objectives=list(objectives), seeds=list(runs), machine=machine(),
                commit=rev, date=time.strftime("%Y-%m-%d"), stats=stats, aims=[dict(aim=t, met=ok) for t, ok in checks],
                mt4ssl_paired=pairs), "\n".join(lines) + ("\n" + text if text else "") + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--compare-hubert", action="store_true")
    ap.add_argument("--mt4ssl", action="store_true", help="both arms in every seed's demo: k-means only, and with MT4SSL's EMA teacher")
    ap.add_argument("--work", default="exp/learning", help="demo output folders, one per seed")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    presets = ("zipformer_tiny", "hubert_tiny") if a.compare_hubert else ("zipformer_tiny",)
    objectives = ("kmeans", "mt4ssl") if a.mt4ssl else ("kmeans",)
    tag = f"learning_{time.strftime('%Y-%m-%d')}_{a.minutes:g}min" + ("_hubert" if a.compare_hubert else "") + ("_mt4ssl" if a.mt4ssl else "")
    runs, revs, rev = {}, {}, commit("nbs", "k2ssl_lit")  # the code that runs: read before the first seed
    for seed in a.seeds:
        out = Path(a.work) / f"{tag}_seed{seed}"
        done = out / "results.json"
        if done.exists():  # a finished seed is reused, with the commit that made it
            runs[seed] = json.loads(done.read_text()); revs[seed] = (out / "commit.txt").read_text().strip()
            print(f"seed {seed}: reusing {done} (commit {revs[seed]})"); continue
        print(f"== seed {seed}", flush=True)
        out.mkdir(parents=True, exist_ok=True); (out / "commit.txt").write_text(rev); revs[seed] = rev
        runs[seed] = run_demo(DemoConfig(out=str(out), minutes=a.minutes, seed=seed, presets=presets, objectives=objectives))
    data, md = summarize(runs, a.minutes, presets, ", ".join(sorted(set(revs.values()))), objectives)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"{tag}.json").write_text(json.dumps(data, indent=1))
    (Path(a.out) / f"{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__": main()
