"""Reliability of the data path: the sampler uses every cut of a small set in every epoch (eager or lazy manifest) and
loses under a tenth of a large one; labels are checked in one pass before training, naming the first bad cuts;
manifests that are missing, empty or truncated fail with one line naming the file."""
import gzip, logging

import numpy as np
import pytest
from lhotse import CutSet
from lhotse.cut import MonoCut

from k2ssl_lit.core import num_frames
from k2ssl_lit.data import InputError, encode_labels, make_sampler, read_manifest, validate_labels


def _cuts(durations, prefix="c"):
    return CutSet.from_cuts(MonoCut(id=f"{prefix}{i:05d}", start=0, duration=round(float(d), 3), channel=0)
                            for i, d in enumerate(durations))


def _epochs(sampler, epochs):
    "Cut ids of each epoch, counted independently of the sampler (a plain list per epoch)."
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out.append([c.id for batch in sampler for c in batch])
    return out


def _lazy(cuts, tmp_path, name):
    path = tmp_path / f"{name}.jsonl.gz"
    cuts.to_file(path)
    lazy = CutSet.from_file(path)
    assert lazy.is_lazy
    return lazy


@pytest.mark.parametrize("n, low, high, max_duration, buckets", [(64, 2, 8, 30, 30), (256, 2, 8, 40, 25), (64, 2, 20, 30, 30)])
@pytest.mark.parametrize("lazy", [False, True])
def test_small_sets_use_every_cut_every_epoch(tmp_path, caplog, n, low, high, max_duration, buckets, lazy):
    cuts = _cuts(np.random.default_rng(n).uniform(low, high, n))
    source = _lazy(cuts, tmp_path, "small") if lazy else cuts
    # the fault first: lhotse as is (min_bucket_batches=0) with drop_last loses a large part of every epoch
    before = _epochs(make_sampler(source, max_duration=max_duration, num_buckets=buckets, min_bucket_batches=0), 5)
    assert min(len(e) for e in before) < 0.9 * n
    with caplog.at_level(logging.WARNING, logger="k2ssl_lit.data"):
        sampler = make_sampler(source, max_duration=max_duration, num_buckets=buckets)
    assert "small set" in caplog.text and "drop_last off" in caplog.text
    for ids in _epochs(sampler, 20):
        assert sorted(ids) == sorted(cuts.ids)  # every cut, exactly once, in every epoch


@pytest.mark.parametrize("world_size", [2, 3])
def test_small_set_ranks_cover_every_cut(world_size):
    cuts = _cuts(np.random.default_rng(0).uniform(2, 8, 64))
    per_rank = [_epochs(make_sampler(cuts, max_duration=30, num_buckets=30, world_size=world_size, rank=r, seed=3), 3)
                for r in range(world_size)]
    for e in range(3):
        assert len({len(r[e]) > 0 for r in per_rank}) == 1
        assert set().union(*(set(r[e]) for r in per_rank)) == set(cuts.ids)


@pytest.mark.parametrize("lazy", [False, True])
def test_large_set_keeps_lhotse_drop_last(tmp_path, lazy):
    "A large set is left to lhotse as is: drop_last stays, each epoch loses under a tenth, all cuts seen over epochs."
    cuts = _cuts(np.random.default_rng(1).uniform(2, 20, 2000), "b")
    source = _lazy(cuts, tmp_path, "large") if lazy else cuts
    sampler = make_sampler(source, max_duration=60)
    assert sampler.drop_last and len(sampler.duration_bins) >= 25
    epochs = _epochs(sampler, 5)
    dur = {c.id: c.duration for c in cuts}
    total = sum(dur.values())
    for ids in epochs:
        assert len(ids) == len(set(ids))
        assert 0.9 < sum(dur[i] for i in ids) / total < 1.0
    assert set().union(*map(set, epochs)) == set(cuts.ids)


def test_sampler_rejects_bad_max_duration():
    cuts = _cuts([3.0] * 10)
    for bad in (0, -5):
        with pytest.raises(InputError, match="max_duration must be positive"):
            make_sampler(cuts, max_duration=bad)


def _labelled(n=6, seconds=1.0, k=100):
    T = num_frames(int(seconds * 16000))
    rng = np.random.default_rng(0)
    from lhotse import Recording
    from lhotse.audio import AudioSource
    out = []
    for i in range(n):
        rec = Recording(id=f"r{i}", sources=[AudioSource(type="file", channels=[0], source=f"/nowhere/r{i}.wav")],
                        sampling_rate=16000, num_samples=int(seconds * 16000), duration=seconds)
        out.append(rec.to_cut().with_custom("kmeans", encode_labels(rng.integers(0, k, T), k)))
    return out, T


def test_validate_labels_accepts_clean_and_off_by_one():
    cuts, T = _labelled()
    cuts[0] = cuts[0].with_custom("kmeans", " ".join(["5"] * (T + 1)))  # one extra: the rule trims it
    cuts[1] = cuts[1].with_custom("kmeans", " ".join(["5"] * (T - 1)))  # one missing: the rule repeats the last
    r = validate_labels(CutSet.from_cuts(cuts), 100)
    assert r["cuts"] == 6 and r["frames"] == 6 * T and 1 <= r["classes_used"] <= 100


def test_validate_labels_names_every_kind_in_one_error():
    cuts, T = _labelled(12)
    cuts[0] = cuts[0].with_custom("kmeans", " ".join(["-3"] * T))   # clamped to class 0 by some losses
    cuts[1] = cuts[1].with_custom("kmeans", " ".join(["150"] * T))  # IndexError: Target 150 is out of bounds
    cuts[2] = cuts[2].with_custom("kmeans", " ".join(["1"] * (T + 2)))
    cuts[3] = cuts[3].with_custom("kmeans", " ".join(["1"] * (T - 2)))
    cuts[4].custom = {}
    cuts[5] = cuts[5].with_custom("kmeans", encode_labels(np.zeros(T, int), 500))
    for i in range(6, 12): cuts[i] = cuts[i].with_custom("kmeans", " ".join(["200"] * T))
    with pytest.raises(InputError) as e:
        validate_labels(CutSet.from_cuts(cuts), 100, what="manifest m.jsonl.gz", max_named=3)
    msg = str(e.value)
    assert msg.startswith("manifest m.jsonl.gz: labels in custom['kmeans'] are unusable for num_classes=100")
    assert "1 of 12 cuts have no labels (first: 'r4')" in msg
    assert "8 of 12 cuts have ids outside [0, num_classes) (first: 'r0' (ids -3..-3), 'r1' (ids 150..150), 'r6' (ids 200..200))" in msg
    assert f"2 of 12 cuts have a label count the off-by-one rule rejects (first: 'r2' ({T + 2} labels, {T} frames), " \
           f"'r3' ({T - 2} labels, {T} frames))" in msg
    assert "1 of 12 cuts were labelled with another k (first: 'r5' (k=500))" in msg
    assert "\n" not in msg


def test_validate_labels_reads_once(tmp_path):
    "One pass: a generator of cuts (readable only once) is enough."
    cuts, _ = _labelled(4)
    assert validate_labels((c for c in cuts), 100)["cuts"] == 4


def test_manifest_errors_name_the_file(tmp_path):
    cuts = _cuts([3.0] * 500)
    cuts.to_file(tmp_path / "ok.jsonl.gz")
    raw = (tmp_path / "ok.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "zero.jsonl.gz").write_bytes(b"")
    assert len(read_manifest(tmp_path / "ok.jsonl.gz", full=True)) == 500
    for name, words in [("cut", "cannot be read to the end (EOFError"), ("empty", "holds no cuts"), ("zero", "holds no cuts"),
                        ("missing", "does not exist")]:
        with pytest.raises(InputError, match="training manifest") as e:
            read_manifest(tmp_path / f"{name}.jsonl.gz", "training", full=True)
        assert str(tmp_path / f"{name}.jsonl.gz") in str(e.value) and words in str(e.value)
    with pytest.raises(InputError, match="cannot be read to the end"):  # lazy: found by the one validation pass
        validate_labels(read_manifest(tmp_path / "cut.jsonl.gz"), 10, what=str(tmp_path / "cut.jsonl.gz"))
