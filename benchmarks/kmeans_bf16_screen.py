"""Could a bf16 first pass make exact k-means assignment 2x faster than scikit-learn's float32 `predict`?

`nearest_centroid` computes every distance with a float32 matrix product, then settles in float64 the few frames that
float32 cannot decide. Its time is bounded below by that product, which on the project's CPU already takes 0.83x the
time of scikit-learn's float32 `predict` (benchmarks/results/kmeans_assign_2026-12-02.md). A bf16 product is faster
on CPUs with bf16 dot-product instructions, but bf16 keeps 8 significant bits, so the first pass leaves many more
frames undecided; those need a second, float32 pass over all centroids. This script measures both sides on the
benchmark's data (standard normal frames, centroids from a short MiniBatchKMeans fit, as in kmeans_assign.py):

- time of the bf16 and float32 products (torch, all threads), interleaved, medians;
- the share of frames a bf16 pass cannot decide, under a rigorous error bound: with x~ = bf16(x) and c~ = bf16(c),
  x.c - x~.c~ = (x - x~).c + x~.(c - c~), bounded by Cauchy-Schwarz with the actual norms of the rounding residuals;
  plus float32 accumulation inside the product (D u32 |x~||c~|) and the rounding of the bf16 output (u |out| / (1 - u));
- the estimated time of "bf16 pass + float32 pass over the undecided frames" against the float32 pass alone.

    python benchmarks/kmeans_bf16_screen.py [--frames 100000] [--dim 768] [--k 500] [--repeats 3]
"""
import argparse, statistics, sys, time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, machine  # noqa: E402

U16, U32 = 2.0**-8, 2.0**-24  # unit roundoff of bf16 and float32


def undecided_share(x: torch.Tensor, c: torch.Tensor, chunk: int = 8192) -> tuple[float, float, bool]:
    "Share of rows whose bf16 distances leave more than one centroid possibly nearest; mean candidates; exact check."
    xb, cb = x.bfloat16(), c.bfloat16()
    dx = (x - xb.float()).norm(dim=1).double()           # ||x - x~|| per frame
    dc = (c - cb.float()).norm(dim=1).double()           # ||c - c~|| per centroid
    xn, cn = xb.float().norm(dim=1).double(), cb.float().norm(dim=1).double()
    c_norm = c.double().norm(dim=1)
    csq = (c.double() ** 2).sum(1)
    D = x.shape[1]
    undecided, cands, truth_ok = 0, [], True
    for s in range(0, len(x), chunk):
        out = (xb[s:s + chunk] @ cb.T).double()          # bf16 product (bf16 output)
        err = (dx[s:s + chunk, None] * c_norm[None] + xn[s:s + chunk, None] * dc[None]
               + D * U32 / (1 - D * U32) * xn[s:s + chunk, None] * cn[None] + U16 * out.abs() / (1 - U16))
        d, e = csq[None] - 2 * out, 2 * err               # ||c||^2 - 2 x.c (||c||^2 exact in float64)
        cand = d - e <= (d + e).amin(1, keepdim=True)
        n = cand.sum(1)
        undecided += int((n > 1).sum()); cands.append(n[n > 1].double())
        true = (csq[None] - 2 * x[s:s + chunk].double() @ c.double().T).argmin(1)
        truth_ok &= bool(cand[torch.arange(len(true)), true].all())
    cands = torch.cat(cands)
    return undecided / len(x), float(cands.mean()) if len(cands) else 0.0, truth_ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    print(f"machine: {machine()}; commit {commit()}; {time.strftime('%Y-%m-%d %H:%M')}")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((a.frames, a.dim), dtype=np.float32))
    km = MiniBatchKMeans(a.k, init="random", n_init=1, max_iter=5, random_state=0, batch_size=4096).fit(x[:20_000].numpy())
    c = torch.tensor(km.cluster_centers_, dtype=torch.float32)
    print(f"{a.frames} frames x {a.dim} dims, k = {a.k}; centroids from MiniBatchKMeans on 20,000 of them")
    share, mean_cand, ok = undecided_share(x, c)
    print(f"bf16 pass: {share:.1%} of the frames undecided ({mean_cand:.2f} candidate centroids each on average); "
          f"the true nearest centroid among the candidates on every frame: {ok}")
    xb, cb, cT = x.bfloat16(), c.bfloat16().T.contiguous(), c.T.contiguous()
    times, xn = {"float32": [], "bf16": [], "predict": []}, x.numpy()
    for _ in range(a.repeats):
        for name, f in (("float32", lambda: x @ cT), ("bf16", lambda: xb @ cb), ("predict", lambda: km.predict(xn))):
            t = time.perf_counter(); f(); times[name].append(time.perf_counter() - t)
    f32, b16, pred = (statistics.median(times[k]) for k in ("float32", "bf16", "predict"))
    print(f"median of {a.repeats} interleaved runs: float32 product {f32:.3f} s, bf16 product {b16:.3f} s "
          f"(bf16 {f32 / b16:.2f}x faster), scikit-learn's float32 predict {pred:.3f} s (the float32 product alone is "
          f"{f32 / pred:.2f}x of it)")
    est = b16 + share * f32
    print(f"bf16 pass + float32 pass over the undecided frames: at least {est:.3f} s (products only, no argmin, "
          f"runner-up or bounds): at most {pred / est:.2f}x scikit-learn's float32 predict, against at most "
          f"{pred / f32:.2f}x for the float32 pass alone")


if __name__ == "__main__":
    main()
