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


def test_validate_labels_counts_durations_outside_the_limits(caplog):
    "Short recordings are kept in the manifest; the validator counts (and names) what training's filter will leave out."
    cuts, _ = _labelled(3, seconds=1.4)
    long_, T = _labelled(1, seconds=3.0)
    with caplog.at_level(logging.WARNING, logger="k2ssl_lit.data"):
        r = validate_labels(CutSet.from_cuts(cuts + [long_[0].with_id("long")]), 100, min_duration=2.0, max_duration=2.5)
    assert (r["cuts"], r["too_short"], r["too_long"]) == (4, 3, 1)
    assert r["outside_first"] == ["'r0' (1.40 s)", "'r1' (1.40 s)", "'r2' (1.40 s)", "'long' (3.00 s)"]
    assert "3 of 4 cuts are shorter than 2 s and 1 longer than 2.5 s" in caplog.text


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


# ---- the command-line tools: one line and exit status 1 for bad input; skipped audio counted, not fatal ----
import json, subprocess, sys
from pathlib import Path

import soundfile as sf
from lhotse import Recording, SupervisionSegment

BIN = Path(sys.executable).parent


def _run(*args, cwd):
    p = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={"OMP_NUM_THREADS": "1", "PATH": str(BIN)})
    return p.returncode, p.stdout, p.stderr


def _audio_cuts(folder, n=6, seconds=1.5, text=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng, cuts = np.random.default_rng(0), []
    for i in range(n):
        x = (0.2 * np.sin(2 * np.pi * (150 + 40 * i) * np.arange(int(seconds * 16000)) / 16000)
             + 0.01 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        sf.write(folder / f"u{i}.flac", x, 16000)
        rec = Recording.from_file(folder / f"u{i}.flac", recording_id=f"u{i}")
        sup = [SupervisionSegment(f"u{i}", f"u{i}", 0.0, rec.duration, text="A BA")] if text else []
        cuts.append(MonoCut(f"u{i}", 0.0, rec.duration, 0, recording=rec, supervisions=sup))
    return CutSet.from_cuts(cuts)


def test_kmeans_skips_a_missing_file_and_counts_it(tmp_path):
    "Before: a 23-frame traceback. Now: skipped, named, counted in the summary; over --max-skipped, one line and exit 1."
    cuts = _audio_cuts(tmp_path / "audio")
    cuts.to_file(tmp_path / "train.jsonl.gz")
    (tmp_path / "audio" / "u3.flac").unlink()
    args = ["k2ssl-kmeans", tmp_path / "train.jsonl.gz", "--k", "4", "--fraction", "1.0", "--n-init", "1", "--max-iter", "5",
            "--quiet"]
    rc, out, err = _run(*args, "--out", "km", "--max-skipped", "0.2", cwd=tmp_path)
    assert rc == 0, err
    assert "skipped 1 of 6 cuts with unreadable audio" in out
    assert sorted(CutSet.from_file(tmp_path / "km" / "train.jsonl.gz").ids) == ["u0", "u1", "u2", "u4", "u5"]
    skipped = json.loads((tmp_path / "km" / "skipped.json").read_text())
    assert [i for i, _ in skipped["train.jsonl.gz"]] == ["u3"] and "u3.flac does not exist" in skipped["train.jsonl.gz"][0][1]
    rc, out, err = _run(*args, "--out", "km2", cwd=tmp_path)  # default max_skipped 0.05 < 1/6
    assert rc == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("k2ssl-kmeans: dump: 1 of 6 cuts have unreadable audio, more than max_skipped=0.05")


def test_kmeans_bad_input_is_one_line(tmp_path):
    cuts = _audio_cuts(tmp_path / "audio", n=3)
    cuts.to_file(tmp_path / "ok.jsonl.gz")
    big = _cuts([3.0] * 2000)
    big.to_file(tmp_path / "big.jsonl.gz")
    raw = (tmp_path / "big.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    for args, words in [(["ok.jsonl.gz", "--k", "0"], "k (--k) must be at least 1, got 0"),
                        (["empty.jsonl.gz"], "holds no cuts"),
                        (["cut.jsonl.gz"], "cut.jsonl.gz cannot be read"),
                        (["ok.jsonl.gz", "--label", "cut.jsonl.gz"], "cut.jsonl.gz cannot be read"),
                        (["missing.jsonl.gz"], "does not exist")]:
        rc, out, err = _run("k2ssl-kmeans", *args, "--out", "km", "--quiet", cwd=tmp_path)
        assert rc == 1 and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("k2ssl-kmeans: ") and words in err, (args, err)
        assert not (tmp_path / "km").exists()


def _ctc_checkpoint(tmp_path):
    from k2ssl_lit.finetune import CharVocab, FinetuneConfig, build_ctc_model, save_ctc_checkpoint
    vocab = CharVocab("AB")
    return save_ctc_checkpoint(build_ctc_model(FinetuneConfig(preset="zipformer_tiny"), len(vocab)), vocab, tmp_path / "ctc.pt")


def test_decode_refuses_zero_cuts(tmp_path):
    "Before: 'CER 0.0000 WER 0.0000 over 0 cuts (8 skipped)', exit 0. Now: an error naming why, nothing written."
    ckpt = _ctc_checkpoint(tmp_path)
    _audio_cuts(tmp_path / "audio", n=8, text=False).to_file(tmp_path / "bare.jsonl.gz")
    rc, out, err = _run("k2ssl-decode", "--checkpoint", ckpt, "--cuts", "bare.jsonl.gz", "--out", "dec", cwd=tmp_path)
    assert rc == 1 and "Traceback" not in err and "CER" not in out
    assert err.strip() == ("k2ssl-decode: manifest bare.jsonl.gz: none of its 8 cuts has a transcript (a supervision with "
                           "text); first: u0, u1, u2, u3, u4")
    cuts = _audio_cuts(tmp_path / "gone", n=2)
    cuts.to_file(tmp_path / "gone.jsonl.gz")
    for i in range(2): (tmp_path / "gone" / f"u{i}.flac").unlink()
    rc, out, err = _run("k2ssl-decode", "--checkpoint", ckpt, "--cuts", "gone.jsonl.gz", "--out", "dec", cwd=tmp_path)
    assert rc == 1 and err.strip().splitlines()[-1].startswith("k2ssl-decode: manifest gone.jsonl.gz: none of its 2 cuts could be decoded")
    assert not (tmp_path / "dec").exists()
    for bad in ("0", "-5"):
        rc, out, err = _run("k2ssl-decode", "--checkpoint", ckpt, "--cuts", "gone.jsonl.gz", "--max-duration", bad, cwd=tmp_path)
        assert rc == 1 and err.strip() == f"k2ssl-decode: --max-duration must be positive seconds, got {bad}"


def test_decode_counts_partial_transcripts(tmp_path):
    "Some cuts without a transcript: decoded over the others, the rest skipped and named (a warning), exit 0."
    ckpt = _ctc_checkpoint(tmp_path)
    cuts = list(_audio_cuts(tmp_path / "audio", n=4))
    cuts[1].supervisions = []
    CutSet.from_cuts(cuts).to_file(tmp_path / "part.jsonl.gz")
    rc, out, err = _run("k2ssl-decode", "--checkpoint", ckpt, "--cuts", "part.jsonl.gz", "--out", "dec", cwd=tmp_path)
    assert rc == 0, err
    assert "over 3 cuts (1 skipped)" in out and "1 of 4 cuts have no transcript and are skipped (first: u1)" in err


def test_finetune_bad_input_is_one_line(tmp_path):
    _audio_cuts(tmp_path / "audio", n=3, text=False).to_file(tmp_path / "bare.jsonl.gz")
    _audio_cuts(tmp_path / "audio2", n=3).to_file(tmp_path / "ok.jsonl.gz")
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    for args, words in [(["--train-cuts", "bare.jsonl.gz"], "none of its 3 cuts has a transcript"),
                        (["--train-cuts", "empty.jsonl.gz"], "training manifest empty.jsonl.gz holds no cuts"),
                        (["--train-cuts", "ok.jsonl.gz", "--max-duration", "-5"], "max_duration (--max-duration) must be positive"),
                        (["--train-cuts", "ok.jsonl.gz", "--dev-cuts", "missing.jsonl.gz"], "dev manifest missing.jsonl.gz does not exist")]:
        rc, out, err = _run("k2ssl-finetune", *args, "--exp-dir", "ft", "--device", "cpu", "--max-steps", "1", cwd=tmp_path)
        assert rc == 1 and "Traceback" not in err, (args, err)
        assert err.strip().splitlines()[-1].startswith("k2ssl-finetune: ") and words in err, (args, err)
        assert not (tmp_path / "ft").exists()
