"""Benchmark: k2ssl_lit's nearest-centroid assignment against scikit-learn's `MiniBatchKMeans.predict`.

The iteration-2 workload: 1M frames x 768 dims (float32, 3 GB) and 500 centroids. The data are standard normal
frames (no cluster structure, the hardest case for near ties) and the centroids come from a short MiniBatchKMeans
fit on 20,000 of them (random init, 10 mini-batches).

Checks, then timings:
- our labels equal scikit-learn's `predict` in float64 (its centroids cast to float64) on every frame;
- scikit-learn's float32 `predict` (its usual mode) may differ on frames whose two best distances are closer than
  float32 can resolve; the script counts them and shows that each is such a near tie.
- time of our assignment (float32 pass + float64 on undecided frames, on --device) vs float32 `predict`.

    python benchmarks/kmeans_assign.py                  # 1M x 768, k=500, CPU
    python benchmarks/kmeans_assign.py --frames 200000  # quicker
    python benchmarks/kmeans_assign.py --device cuda    # our side on a GPU
"""
import argparse, copy, os, sys, time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from k2ssl_lit.kmeans import nearest_centroid


def predict64(km, x, chunk=100_000):
    "scikit-learn's predict in float64, chunk by chunk so that the float64 copy stays small."
    km64 = copy.copy(km); km64.cluster_centers_ = km.cluster_centers_.astype(np.float64)
    return np.concatenate([km64.predict(x[s : s + chunk].astype(np.float64)) for s in range(0, len(x), chunk)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(f"{a.frames} frames x {a.dim} dims float32 ({a.frames * a.dim * 4 / 2**30:.2f} GiB), k={a.k}; "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; device {a.device}")

    rng = np.random.default_rng(a.seed)
    x = np.empty((a.frames, a.dim), dtype=np.float32)
    for s in range(0, a.frames, 100_000): x[s : s + 100_000] = rng.standard_normal((min(100_000, a.frames - s), a.dim), dtype=np.float32)
    t0 = time.perf_counter()
    km = MiniBatchKMeans(a.k, init="random", n_init=1, max_iter=5, batch_size=10_000, random_state=a.seed,
                         compute_labels=False).fit(x[:20_000])  # k-means++ on 500 x 768 takes minutes on 2 cores
    print(f"centroids: MiniBatchKMeans on 20,000 frames in {time.perf_counter() - t0:.1f} s")

    nearest_centroid(x[:20_000], km.cluster_centers_, device=a.device)  # warm-up (threads, CUDA context)
    km.predict(x[:20_000])
    st = {}
    t0 = time.perf_counter(); ours = nearest_centroid(x, km.cluster_centers_, device=a.device, stats=st).numpy(); t_ours = time.perf_counter() - t0
    t0 = time.perf_counter(); sk32 = km.predict(x); t_sk32 = time.perf_counter() - t0
    t0 = time.perf_counter(); sk64 = predict64(km, x); t_sk64 = time.perf_counter() - t0

    assert (ours == sk64).all(), f"{(ours != sk64).sum()} labels differ from scikit-learn's float64 predict"
    print(f"labels identical to scikit-learn's float64 predict on all {a.frames} frames "
          f"({st['float64_frames']} frames ({st['float64_frames'] / a.frames:.1%}) went through our float64 pass)")
    diff = np.flatnonzero(sk32 != ours)
    print(f"scikit-learn's float32 predict differs on {len(diff)} frames ({len(diff) / a.frames:.1e})")
    if len(diff):
        c = km.cluster_centers_.astype(np.float64); xd = x[diff].astype(np.float64)
        d_ours = ((xd - c[ours[diff]]) ** 2).sum(1); d_sk = ((xd - c[sk32[diff]]) ** 2).sum(1)
        assert (d_ours <= d_sk).all(), "where they differ, our centroid must be at least as near"
        rel = (d_sk - d_ours) / d_ours
        bound = 2 * (a.dim + 4) * np.finfo(np.float32).eps * (2 * np.linalg.norm(xd, axis=1) * np.linalg.norm(c, axis=1).max()
                                                              + (c ** 2).sum(1).max()) / d_ours
        print(f"  there float32 predict picks a farther centroid by {rel.max():.1e} relative at most "
              f"(float32 error bound there: {bound.min():.1e} or more): near ties float32 cannot resolve")
    print(f"time: ours {t_ours:.2f} s ({a.frames / t_ours / 1e6:.2f} M frames/s) | scikit-learn float32 predict "
          f"{t_sk32:.2f} s | float64 predict {t_sk64:.2f} s")
    print(f"speed ratio: ours is {t_sk32 / t_ours:.2f}x scikit-learn's float32 predict, {t_sk64 / t_ours:.2f}x its float64 predict")


if __name__ == "__main__":
    main()
