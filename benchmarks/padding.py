"""Wasted audio: lhotse's DynamicBucketingSampler against fixed-size random batches.

Crop collation (k2SSL) cuts every cut of a batch down to the shortest and throws the rest away; pad collation pads every
cut to the longest and computes on zeros. Both waste less when a batch holds cuts of similar duration, which is what
the bucketing sampler is for. For each data set this prints, for the bucketing sampler (k2SSL settings: 30 buckets,
shuffle) and for random batches of a fixed number of cuts holding the same real audio per batch on average:

    crop waste = audio cropped away / real audio         pad waste = padding / (real audio + padding)

and the ratio random / bucketed. Data sets: a LibriSpeech-like synthetic duration distribution (only durations matter,
so the cuts have no audio) and, when k2ssl_lit.corpus is available, the embedded eSpeak NG corpus.

    python benchmarks/padding.py [--num-cuts 20000] [--max-duration 600] [--corpus-hours 1.0] [--seed 0]
"""
import argparse, sys, time, warnings
from pathlib import Path

import numpy as np
from lhotse import CutSet
from lhotse.cut import MonoCut
from lhotse.dataset import DynamicCutSampler

try: import k2ssl_lit  # noqa: F401
except ImportError: sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed
from k2ssl_lit.data import make_sampler, waste

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, machine  # noqa: E402


def librispeech_like(n: int, seed: int = 0) -> np.ndarray:
    """Durations shaped like LibriSpeech training utterances: 2-35 s, mean about 12 s.

    A sketch, not the real distribution: 55% near 15 s (most LibriSpeech utterances are segmented at 10-17 s),
    40% spread over 2-12 s, 5% in a long tail up to 35 s."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=[0.55, 0.40, 0.05])
    d = np.where(kind == 0, rng.normal(14.8, 1.5, n).clip(10.0, 17.5),
                 np.where(kind == 1, rng.uniform(2.0, 12.0, n), rng.uniform(17.5, 35.0, n)))
    return d.round(3)


def duration_cuts(durations) -> CutSet:
    "Audio-less cuts: all a sampler looks at is the duration."
    return CutSet.from_cuts(MonoCut(id=f"c{i:06d}", start=0, duration=float(d), channel=0)
                            for i, d in enumerate(durations))


def durations_of(batches):
    return [[c.duration for c in b] for b in batches]


def compare(name: str, cuts: CutSet, max_duration: float, seed: int) -> dict:
    "Print and return the waste of bucketed and random batches on `cuts`."
    t0 = time.time()
    d = np.array([c.duration for c in cuts])
    bucketed = durations_of(make_sampler(cuts, max_duration=max_duration, seed=seed, drop_last=False))
    per_batch = float(np.mean([sum(b) for b in bucketed]))  # real audio per bucketed batch
    size = max(1, round(per_batch / d.mean()))               # cuts per random batch holding the same audio
    order = np.random.default_rng(seed).permutation(d)
    random = [list(order[i:i + size]) for i in range(0, len(order), size)]
    # for reference: lhotse's non-bucketing sampler under the same max_duration (it counts padded duration)
    with warnings.catch_warnings():  # an eager CutSet is fine at this size
        warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
        capped = durations_of(DynamicCutSampler(cuts, max_duration=max_duration, shuffle=True, seed=seed))
    wb, wr, wc = waste(bucketed), waste(random), waste(capped)
    print(f"\n== {name}: {len(d)} cuts, {d.sum() / 3600:.1f} h, duration {d.min():.1f}-{d.max():.1f} s "
          f"(mean {d.mean():.1f} s), max_duration {max_duration:g} s")
    print(f"{'batches':>44} {'cuts/batch':>11} {'audio/batch':>12} {'crop waste':>11} {'pad waste':>10}")
    for label, bs, w in (("DynamicBucketingSampler (30 buckets)", bucketed, wb),
                         (f"fixed-size random ({size} cuts)", random, wr),
                         ("[ref] DynamicCutSampler, same max_duration", capped, wc)):
        print(f"{label:>44} {np.mean([len(b) for b in bs]):11.1f} {np.mean([sum(b) for b in bs]):11.1f}s "
              f"{w['crop_frac']:11.1%} {w['pad_frac']:10.1%}")
    print(f"{'random / bucketed':>44} {'':11} {'':12} {wr['crop_frac'] / wb['crop_frac']:10.1f}x "
          f"{wr['pad_frac'] / wb['pad_frac']:9.1f}x   ({time.time() - t0:.1f} s)")
    return {"bucketed": wb, "random": wr, "capped": wc}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-cuts", type=int, default=20_000, help="synthetic LibriSpeech-like cuts")
    p.add_argument("--max-duration", type=float, default=600.0, help="seconds per batch (k2SSL: 600 per GPU)")
    p.add_argument("--corpus-hours", type=float, default=1.0, help="hours of the embedded corpus (cached)")
    p.add_argument("--corpus-max-duration", type=float, default=60.0, help="seconds per batch on the small corpus")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(f"machine: {machine()}; commit {commit()}; {time.strftime('%Y-%m-%d %H:%M')}")
    compare("LibriSpeech-like synthetic durations", duration_cuts(librispeech_like(a.num_cuts, a.seed)),
            a.max_duration, a.seed)
    try:
        from k2ssl_lit.corpus import cached_corpus
    except ImportError as e:
        print(f"\n== embedded corpus: skipped (k2ssl_lit.corpus.cached_corpus is not available: {e})")
        return
    from k2ssl_lit.data import corpus_cuts
    cuts = corpus_cuts(cached_corpus(hours=a.corpus_hours, seed=a.seed), "train", min_duration=0.0,
                       max_duration=None).to_eager()
    compare(f"embedded corpus, train split ({a.corpus_hours:g} h requested; no duration filter)", cuts,
            a.corpus_max_duration, a.seed)


if __name__ == "__main__":
    sys.exit(main())
