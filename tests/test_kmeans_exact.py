"""nearest_centroid against independent references on data built to be hard: large common offsets (where float32
loses most), frames that are centroids, near-duplicate and duplicate centroids, exact ties, and float64 input."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from k2ssl_lit.kmeans import float32_distance_error, nearest_centroid


def direct64(x, c):
    "argmin of ||x - c||² summed in float64 (the first minimum), chunk by chunk."
    x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
    return np.concatenate([((x[s : s + 512, None] - c) ** 2).sum(2).argmin(1) for s in range(0, len(x), 512)])


def exact(f, C):
    "Nearest centroid in exact rational arithmetic, the lowest index on ties."
    d = [sum((Fraction(float(u)) - Fraction(float(v))) ** 2 for u, v in zip(f, c)) for c in C]
    return d.index(min(d))


@pytest.mark.parametrize("offset", [0.0, 50.0])
@pytest.mark.parametrize("dim,k", [(13, 7), (64, 100), (300, 40)])
def test_matches_float64_and_exact(offset, dim, k):
    rng = np.random.default_rng(dim + k)
    C = (rng.standard_normal((k, dim)) + offset).astype(np.float32)
    C[k - 1] = C[0]                                        # a duplicate: index 0 must win its frames
    C[k - 2] = np.nextafter(C[1], np.float32(np.inf))      # a near-duplicate, one float32 step away
    x = (rng.standard_normal((3000, dim)) + offset).astype(np.float32)
    x[:4] = C[[0, 1, k - 2, k - 1]]                        # frames that are centroids
    a, b = rng.integers(0, k, 500), rng.integers(0, k, 500)
    x[4:504] = ((C[a].astype(np.float64) + C[b]) / 2 + 1e-7 * (C[b] - C[a])).astype(np.float32)  # near ties
    st = {}
    got = nearest_centroid(x, C, chunk_size=700, stats=st).numpy()
    np.testing.assert_array_equal(got, direct64(x, C))
    np.testing.assert_array_equal(got[:4], [0, 1, k - 2, 0])
    pick = np.r_[0:4, np.random.default_rng(1).choice(np.arange(4, 504), 40, replace=False)]
    assert [exact(x[i], C) for i in pick] == got[pick].tolist()
    np.testing.assert_array_equal(nearest_centroid(torch.from_numpy(x).double(), torch.from_numpy(C)).numpy(), got)
    assert 0 < st["float64_frames"] < len(x)


def test_exact_ties_on_integer_grid():
    "Integer coordinates: midpoints are exact ties in every arithmetic; the lower index wins, as in predict."
    rng = np.random.default_rng(0)
    C = 2 * rng.integers(-3, 4, (30, 40)).astype(np.float32)  # even coordinates: every midpoint is on the grid
    a, b = rng.integers(0, 30, 3000), rng.integers(0, 30, 3000)
    mid = (C[a[a != b]] + C[b[a != b]]) / 2
    got = nearest_centroid(mid, C).numpy()
    np.testing.assert_array_equal(got, direct64(mid, C))
    d = ((mid[:, None].astype(np.float64) - C) ** 2).sum(2)
    tie = (d == d.min(1, keepdims=True)).sum(1) > 1
    assert tie.sum() > 100                                    # many exact ties among the nearest
    np.testing.assert_array_equal(got[tie], d[tie].argmin(1))  # each broken to the lowest index
    assert [exact(f, C) for f in mid[:30]] == got[:30].tolist()


def test_bound_holds_for_float32_products():
    "The float32 error bound is never exceeded, here with a large common offset where errors are largest."
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((1000, 256)) + 100).astype(np.float32)
    c = (rng.standard_normal((64, 256)) + 100).astype(np.float32)
    c64 = c.astype(np.float64); cn = (c64 ** 2).sum(1)
    d32 = (cn.astype(np.float32) + x @ (-2 * c).T).astype(np.float64)
    d64 = cn - 2 * x.astype(np.float64) @ c64.T
    g, eta = float32_distance_error(256)
    bound = g * (2 * np.linalg.norm(x.astype(np.float64), axis=1)[:, None] * np.sqrt(cn) + cn) + eta
    assert (np.abs(d32 - d64) <= bound).all()
