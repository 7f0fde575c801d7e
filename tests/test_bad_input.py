"""Bad-input battery for k2ssl_lit.data: manifest creation (Python API and the k2ssl-prepare command) must name every
bad file, link and folder with its reason, skip and count it, convert what can be converted (including MP3 and Ogg,
which libsndfile reads) and keep every readable file whatever its duration; a folder with nothing usable is a non-zero
exit that writes nothing; training-time loading must skip (and count) a cut whose audio disappeared, never crash."""
import gzip, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from k2ssl_lit.core import SAMPLE_RATE
from k2ssl_lit.data import SSLDataset, check_audio, prepare_audio_dir

REPO = Path(__file__).resolve().parents[1]
GOOD = ["good1.wav", "good2.flac", "sub/GOOD3.WAV", "short.wav"]  # 16 kHz mono (2.5 s and 0.1 s): kept as they are
CONVERTED = "stereo44k.wav"                               # 44.1 kHz stereo: kept, converted to 16 kHz mono
BAD = {  # file -> words its reason must contain
    "empty.wav": "empty file",
    "text.wav": "not readable as audio",
    "truncated.flac": "truncated or corrupt",
}


def _tone(seconds, sr, amplitude=0.2, seed=0):
    t = np.arange(int(round(seconds * sr))) / sr
    noise = 0.005 * np.random.default_rng(seed).standard_normal(len(t))
    return (amplitude * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


@pytest.fixture
def battery(tmp_path):
    "A folder of good files and the bad ones of the brief (written here, independently of the notebook)."
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    sf.write(d / "good1.wav", _tone(2.5, SAMPLE_RATE, seed=1), SAMPLE_RATE)
    sf.write(d / "good2.flac", _tone(2.5, SAMPLE_RATE, seed=2), SAMPLE_RATE)
    sf.write(d / "sub" / "GOOD3.WAV", _tone(2.5, SAMPLE_RATE, seed=3), SAMPLE_RATE, format="WAV")
    x = _tone(2.5, 44_100, amplitude=1.0)
    sf.write(d / CONVERTED, np.stack([0.1 * x, 0.3 * x], axis=1), 44_100)  # channel mean: 0.2 * x
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("definitely not a RIFF header\n" * 10)
    sf.write(d / "full.flac", _tone(3.0, SAMPLE_RATE, seed=4), SAMPLE_RATE)
    data = (d / "full.flac").read_bytes()
    (d / "full.flac").unlink()
    (d / "truncated.flac").write_bytes(data[: len(data) // 2])  # header intact, frames cut off
    sf.write(d / "short.wav", _tone(0.1, SAMPLE_RATE), SAMPLE_RATE)
    (d / "README.txt").write_text("not audio: ignored")
    return d


def test_truncated_flac_header_lies(battery):
    "The trap this battery exists for: the header reads fine, decoding fails."
    assert sf.info(str(battery / "truncated.flac")).frames == 3 * SAMPLE_RATE
    with pytest.raises(Exception):
        sf.read(str(battery / "truncated.flac"))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_flac_detected_wherever_cut(tmp_path, fraction):
    sf.write(tmp_path / "x.flac", _tone(3.0, SAMPLE_RATE), SAMPLE_RATE)
    data = (tmp_path / "x.flac").read_bytes()
    (tmp_path / "t.flac").write_bytes(data[: int(len(data) * fraction)])
    reason = check_audio(tmp_path / "t.flac")
    assert reason is not None and reason.startswith("truncated")


def test_manifest_battery(battery, tmp_path):
    cuts, report = prepare_audio_dir(battery, tmp_path / "out", progress=False)
    assert sorted(report.kept) == sorted(GOOD + [CONVERTED])
    assert set(report.skipped) == set(BAD)
    for name, words in BAD.items():
        assert words in report.skipped[name], (name, report.skipped[name])
        assert name in report.summary()
    assert list(report.converted) == [CONVERTED]
    assert "44100 Hz 2 channels -> 16000 Hz mono" in report.converted[CONVERTED]
    assert "kept: 5" in report.summary() and "skipped: 3" in report.summary()
    # the manifest on disk holds exactly the kept files, all 16 kHz mono, all readable
    on_disk = [json.loads(line) for line in gzip.open(tmp_path / "out" / "cuts.jsonl.gz", "rt")]
    assert sorted(c["id"] for c in on_disk) == ["good1", "good2", "short", "stereo44k", "sub/GOOD3"]
    for cut in cuts:
        audio = cut.load_audio()
        seconds = 0.1 if cut.id == "short" else 2.5
        assert cut.sampling_rate == SAMPLE_RATE and audio.shape == (1, int(seconds * SAMPLE_RATE))
    # the converted file is the channel mean (0.2 x, x a unit sine): RMS 0.2 / sqrt(2)
    stereo = cuts["stereo44k"].load_audio()[0]
    assert abs(np.sqrt(np.mean(stereo**2)) - 0.2 / np.sqrt(2)) < 0.005
    assert Path(cuts["stereo44k"].recording.sources[0].source).is_relative_to(tmp_path / "out" / "audio")


def test_truncated_wav_never_crashes(tmp_path):
    "A WAV cut short: libsndfile trusts the file size, so it is kept with the frames that exist (or skipped)."
    d = tmp_path / "a"
    d.mkdir()
    sf.write(d / "w.wav", _tone(6.0, SAMPLE_RATE), SAMPLE_RATE)
    data = (d / "w.wav").read_bytes()
    (d / "w.wav").write_bytes(data[: len(data) // 2])
    cuts, report = prepare_audio_dir(d, tmp_path / "out", progress=False)
    if report.kept:
        cut = cuts[0]
        assert cut.load_audio().shape[1] == cut.num_samples
    else:
        assert "w.wav" in report.skipped


def test_cli_battery(battery, tmp_path):
    out = tmp_path / "cli_out"
    exe = Path(sys.executable).parent / "k2ssl-prepare"  # installed by `pip install -e .`, as the README says
    assert exe.exists(), f"{exe} is missing: install the package with pip install -e ."
    res = subprocess.run([str(exe), "--audio-dir", str(battery), "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    for name, words in BAD.items():
        line = next((l for l in res.stdout.splitlines() if l.strip().startswith(f"{name}:")), None)
        assert line is not None and words in line, (name, res.stdout)
    assert f"{CONVERTED}: 44100 Hz 2 channels -> 16000 Hz mono" in res.stdout
    assert "kept: 5" in res.stdout and "skipped: 3" in res.stdout
    assert "wrote 5 cuts" in res.stdout and (out / "cuts.jsonl.gz").exists()


def test_missing_args_stop_the_cli(tmp_path):
    from k2ssl_lit.data import prepare_cli
    with pytest.raises(SystemExit, match="are required"):
        prepare_cli(audio_dir=str(tmp_path))


def test_training_time_skip(battery, tmp_path):
    cuts, _ = prepare_audio_dir(battery, tmp_path / "out", progress=False)
    (battery / "good2.flac").unlink()  # disappears after the manifest was written
    ds = SSLDataset(label_key=None)
    batch = ds[cuts]
    assert sorted(batch["cut_ids"]) == ["good1", "short", "stereo44k", "sub/GOOD3"]
    assert [cid for cid, _ in batch["skipped"]] == ["good2"]
    assert "good2.flac does not exist" in batch["skipped"][0][1]
    assert ds.num_skipped == 1
    assert batch["audio"].shape == (4, int(0.1 * SAMPLE_RATE)) and torch.isfinite(batch["audio"]).all()  # crop: shortest


def _prepare(*args):
    exe = Path(sys.executable).parent / "k2ssl-prepare"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_short_real_recordings_are_kept(tmp_path):
    "Eight readable recordings of 1.3-1.5 s: before, an empty manifest and exit 0; now all eight are kept."
    d = tmp_path / "a"
    d.mkdir()
    for i in range(8):
        sf.write(d / f"r{i}.wav", _tone(1.3 + 0.025 * i, SAMPLE_RATE, seed=i), SAMPLE_RATE)
    res = _prepare("--audio-dir", d, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert "wrote 8 cuts" in res.stdout
    lines = gzip.open(tmp_path / "out" / "cuts.jsonl.gz", "rt").read().splitlines()
    assert sorted(json.loads(l)["id"] for l in lines) == [f"r{i}" for i in range(8)]


def test_nothing_usable_is_an_error_and_writes_nothing(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "empty.wav").write_bytes(b"")
    (d / "voice.m4a").write_bytes(b"\x00\x00\x00 ftypM4A ")
    res = _prepare("--audio-dir", d, "--out", tmp_path / "out")
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("k2ssl-prepare: no usable audio file under") and "empty.wav: empty file" in last
    assert "Traceback" not in res.stderr
    assert "voice.m4a: .m4a audio, which libsndfile cannot read" in res.stdout  # the report names every file
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "nothing"
    empty.mkdir()
    res = _prepare("--audio-dir", empty, "--out", tmp_path / "out")
    assert res.returncode == 1 and "no usable audio file" in res.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["-5", "-0.5"])
def test_negative_max_duration_is_one_line(battery, tmp_path, value):
    res = _prepare("--audio-dir", battery, "--out", tmp_path / "out", "--max-duration", value)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"k2ssl-prepare: --max-duration must be >= 0 seconds (0: no limit), got {value}"
    assert not (tmp_path / "out").exists()


def test_lossy_formats_links_and_folders(tmp_path):
    "MP3 and Ogg (Vorbis, Opus) read through libsndfile; a link to a file is one cut; broken links and folders named."
    d = tmp_path / "a"
    (d / "more").mkdir(parents=True)
    x = _tone(2.0, SAMPLE_RATE)
    sf.write(d / "a.mp3", x, SAMPLE_RATE, format="MP3")
    sf.write(d / "b.ogg", x, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    sf.write(d / "c.opus", x, SAMPLE_RATE, format="OGG", subtype="OPUS")
    sf.write(d / "real.wav", x, SAMPLE_RATE)
    (d / "more" / "link.wav").symlink_to(d / "real.wav")
    (d / "dangling.flac").symlink_to(d / "nowhere.flac")
    (d / "loop").symlink_to(d, target_is_directory=True)  # a link back up the tree: walked once
    cuts, report = prepare_audio_dir(d, tmp_path / "out", progress=False)
    assert sorted(cuts.ids) == ["a", "b", "c", "real"]
    assert sorted(report.converted) == ["a.mp3", "b.ogg", "c.opus"]
    assert report.skipped == {"dangling.flac": f"broken symbolic link to {d / 'nowhere.flac'}",
                              "more/link.wav": "same file as real.wav (a link): kept once"}
    for cut in cuts:
        a = cut.load_audio()
        assert a.shape[0] == 1 and abs(a.shape[1] - 2 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE


def test_unreadable_folder_is_named(tmp_path, monkeypatch):
    d = tmp_path / "a"
    (d / "locked").mkdir(parents=True)
    sf.write(d / "ok.wav", _tone(2.0, SAMPLE_RATE), SAMPLE_RATE)
    sf.write(d / "locked" / "hidden.wav", _tone(2.0, SAMPLE_RATE), SAMPLE_RATE)
    if os.geteuid() == 0:  # root opens every folder: stand in for the refusal
        real = os.scandir
        monkeypatch.setattr(os, "scandir", lambda p=".": (_ for _ in ()).throw(PermissionError(13, "Permission denied", str(p)))
                            if Path(p) == d / "locked" else real(p))
    else:
        os.chmod(d / "locked", 0)
    try:
        cuts, report = prepare_audio_dir(d, tmp_path / "out", progress=False)
    finally:
        os.chmod(d / "locked", 0o755)
    assert list(cuts.ids) == ["ok"]
    assert report.skipped == {"locked/": "folder not readable (Permission denied)"}
    assert "locked/: folder not readable" in report.summary()
