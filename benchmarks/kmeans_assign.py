"""Benchmark: k2ssl_lit's exact nearest-centroid assignment against scikit-learn's `MiniBatchKMeans.predict`.

The iteration-2 workload: 1M frames x 768 dims (float32, 3 GB) and 500 centroids. The data are standard normal
frames (no cluster structure, the hardest case for near ties) and the centroids come from a short MiniBatchKMeans
fit on 20,000 of them (random init, 5 passes).

Checks, then timings:
- our labels equal scikit-learn's `predict` in float64 (its centroids cast to float64) on every frame; any frame
  where they differ is settled in exact rational arithmetic;
- scikit-learn's float32 `predict` (its usual mode) may differ on frames whose two best distances are closer than
  float32 can resolve; the script counts them and shows that each is such a near tie;
- time of ours (float32 pass + float64 on undecided frames against their candidate centroids), of float32 `predict`
  and of the bare float32 products (threaded as ours, results thrown away: what any exact float32 method must at
  least spend), interleaved (ours, scikit-learn, bare, ours, ...) `--repeats` times, medians reported, because other
  work may share the CPU; float64 `predict` once.

    python benchmarks/kmeans_assign.py                  # 1M x 768, k=500, CPU; writes benchmarks/results/
    python benchmarks/kmeans_assign.py --frames 200000  # quicker
    python benchmarks/kmeans_assign.py --device cuda    # our side on a GPU
"""
import argparse, copy, datetime, os, platform, sys, time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not
from k2ssl_lit.kmeans import float32_distance_error, nearest_centroid
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import commit, cpu_name  # noqa: E402


def predict64(km, x, chunk=100_000):
    "scikit-learn's predict in float64, chunk by chunk so that the float64 copy stays small."
    km64 = copy.copy(km); km64.cluster_centers_ = km.cluster_centers_.astype(np.float64)
    return np.concatenate([km64.predict(x[s : s + chunk].astype(np.float64)) for s in range(0, len(x), chunk)])


def bare_product(x, c, chunk=4096):
    "The float32 products alone, threaded as ours: a floor that no exact float32 method can beat."
    cT = np.ascontiguousarray(-2 * c.T)
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(torch.get_num_threads()) as pool:
        list(pool.map(lambda s: np.matmul(x[s : s + chunk], cT).shape, range(0, len(x), chunk)))


def exact_nearest(f, C):
    "Nearest centroid in exact rational arithmetic, the lowest index on ties."
    f = [Fraction(float(v)) for v in f]
    dist = [sum((u - Fraction(float(v))) ** 2 for u, v in zip(f, c)) for c in C]
    return dist.index(min(dist))


def machine():
    blas = ", ".join(sorted({f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)" for i in threadpool_info()
                             if i["user_api"] == "blas"}))
    return (f"{cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, BLAS: {blas}; commit {commit('k2ssl_lit/kmeans.py')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timings of each side")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/kmeans_assign_<date>.md; '-': none)")
    a = ap.parse_args()
    lines = []
    def say(s=""): print(s, flush=True); lines.append(s)

    say(f"# Exact k-means assignment vs scikit-learn, {datetime.date.today()}")
    say(f"machine: {machine()}")
    say(f"{a.frames} frames x {a.dim} dims float32 ({a.frames * a.dim * 4 / 2**30:.2f} GiB), k={a.k}, seed {a.seed}; our side on {a.device}")
    rng = np.random.default_rng(a.seed)
    x = np.empty((a.frames, a.dim), dtype=np.float32)
    for s in range(0, a.frames, 100_000): x[s : s + 100_000] = rng.standard_normal((min(100_000, a.frames - s), a.dim), dtype=np.float32)
    t0 = time.perf_counter()
    km = MiniBatchKMeans(a.k, init="random", n_init=1, max_iter=5, batch_size=10_000, random_state=a.seed,
                         compute_labels=False).fit(x[:20_000])  # k-means++ on 500 x 768 takes minutes on 2 cores
    say(f"centroids: MiniBatchKMeans on 20,000 frames in {time.perf_counter() - t0:.1f} s")

    nearest_centroid(x[:20_000], km.cluster_centers_, device=a.device); km.predict(x[:20_000])  # warm-up
    t_ours, t_sk32, t_bare, cpu, st = [], [], [], {"ours": [], "sk": [], "bare": []}, {}
    def timed(f, wall, key):
        t0, c0 = time.perf_counter(), time.process_time(); out = f(); wall.append(time.perf_counter() - t0)
        cpu[key].append(time.process_time() - c0); return out
    for r in range(a.repeats):
        ours = timed(lambda: nearest_centroid(x, km.cluster_centers_, device=a.device, stats=st).numpy(), t_ours, "ours")
        sk32 = timed(lambda: km.predict(x), t_sk32, "sk")
        timed(lambda: bare_product(x, km.cluster_centers_), t_bare, "bare")
        say(f"  round {r + 1}: ours {t_ours[-1]:.2f} s, scikit-learn float32 {t_sk32[-1]:.2f} s, bare products {t_bare[-1]:.2f} s "
            f"(CPU time {cpu['ours'][-1]:.2f}, {cpu['sk'][-1]:.2f}, {cpu['bare'][-1]:.2f} s)")
    t0 = time.perf_counter(); sk64 = predict64(km, x); t_sk64 = time.perf_counter() - t0

    diff64 = np.flatnonzero(ours != sk64)
    say(f"float64 pass: {st['float64_frames']} frames ({st['float64_frames'] / a.frames:.2%}) against "
        f"{st['float64_pairs'] / max(st['float64_frames'], 1):.2f} candidate centroids each on average")
    if not len(diff64): say(f"labels identical to scikit-learn's float64 predict on all {a.frames} frames")
    else:
        say(f"labels differ from scikit-learn's float64 predict on {len(diff64)} frames; in exact arithmetic:")
        for i in diff64[:20]:
            e = exact_nearest(x[i], km.cluster_centers_)
            say(f"  frame {i}: ours {ours[i]}, float64 predict {sk64[i]}, exact {e}")
        assert all(ours[i] == exact_nearest(x[i], km.cluster_centers_) for i in diff64[:20]), "ours is not the exact nearest"
    diff = np.flatnonzero(sk32 != ours)
    say(f"scikit-learn's float32 predict differs from ours on {len(diff)} frames ({len(diff) / a.frames:.1e})")
    if len(diff):
        c = km.cluster_centers_.astype(np.float64); xd = x[diff].astype(np.float64)
        d_ours = ((xd - c[ours[diff]]) ** 2).sum(1); d_sk = ((xd - c[sk32[diff]]) ** 2).sum(1)
        assert (d_ours <= d_sk).all(), "where they differ, our centroid must be at least as near"
        g, eta = float32_distance_error(a.dim)
        bound = 2 * (g * (2 * np.linalg.norm(xd, axis=1) * np.linalg.norm(c, axis=1).max() + (c ** 2).sum(1).max()) + eta)
        say(f"  there float32 predict picks a centroid farther by {(d_sk - d_ours).max():.1e} at most (squared distance), "
            f"inside float32's error bound ({bound.min():.1e} or more): near ties float32 cannot resolve")
    mo, m32 = float(np.median(t_ours)), float(np.median(t_sk32))
    say(f"time, median of {a.repeats} interleaved runs (min-max): ours {mo:.2f} s ({min(t_ours):.2f}-{max(t_ours):.2f}), "
        f"{a.frames / mo / 1e6:.2f} M frames/s | scikit-learn float32 predict {m32:.2f} s ({min(t_sk32):.2f}-{max(t_sk32):.2f}) "
        f"| bare float32 products {float(np.median(t_bare)):.2f} s ({min(t_bare):.2f}-{max(t_bare):.2f}) | float64 predict {t_sk64:.2f} s (once)")
    say(f"per round, ours / scikit-learn float32: {', '.join(f'{o / s:.2f}' for o, s in zip(t_ours, t_sk32))}")
    say(f"CPU time (all threads), medians: ours {np.median(cpu['ours']):.2f} s, scikit-learn float32 {np.median(cpu['sk']):.2f} s, "
        f"bare products {np.median(cpu['bare']):.2f} s")
    say(f"speed ratio (medians): ours is {m32 / mo:.2f}x scikit-learn's float32 predict, {t_sk64 / mo:.2f}x its float64 predict; "
        f"the bare products alone would be {m32 / float(np.median(t_bare)):.2f}x float32 predict")
    if a.out != "-":
        out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"kmeans_assign_{datetime.date.today()}.md"
        out.write_text(lines[0] + "\n\nOutput of `python benchmarks/kmeans_assign.py " + " ".join(sys.argv[1:]) + "`:\n\n```\n"
                       + "\n".join(lines[1:]) + "\n```\n")
        print(f"written to {out}")


if __name__ == "__main__":
    main()
