"""benchmarks/loader.py: a --quick run on the small cached corpus gives every row, positive figures, and ratios that are the
quotients of its own measured numbers (recomputed here from the raw times, not from its printed rates); bad arguments
are refused before anything runs."""
import importlib.util, json, math, statistics, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "loader.py"


def _module():
    spec = importlib.util.spec_from_file_location("loader_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    "One --quick run, with a GPU consumption given; its JSON, Markdown and printed output."
    out = tmp_path_factory.mktemp("loader") / "loader"
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--omp-passive", "--gpu-audio-seconds-per-second", "500",
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(Path(f"{out}.json").read_text()), Path(f"{out}.md").read_text(), r.stdout


def test_every_row_positive(quick):
    res, md, _ = quick
    mod = _module()
    keys = [(r["kind"], r["manifest"], r["workers"]) for r in res["loader"]]
    want = [(k, m, w) for k in mod.KINDS for m in mod.MANIFESTS for w in (0, 1, 2)]
    assert sorted(keys) == sorted(want)
    for r in res["loader"]:
        assert r["batches"] >= 2 and r["cuts"] >= r["batches"]
        assert r["delivered_s"] > 0 and r["wall_s"] > 0 and r["sps"] > 0 and r["first_batch_s"] > 0
        assert r["warmup_batches"] == max(1, 2 * r["workers"])
        assert f"| {r['kind']} | {r['manifest']} | {r['workers']} | {r['batches']} |" in md
    assert set(res["models"]) == set(mod.MODELS)
    for m in res["models"].values():
        assert m["audio_s"] == pytest.approx(1 * 2.0) and len(m["times_s"]) == 1 and min(m["times_s"]) > 0
    assert res["fbank_in_model"]["median_s"] > 0
    assert res["corpus"]["cuts"] > 10 and res["corpus"]["audio_s"] > 0


def test_ratios_are_quotients_of_measured_numbers(quick):
    res, _, _ = quick
    loader = {(r["kind"], r["manifest"], r["workers"]): r for r in res["loader"]}
    consumers = {n: m["audio_s"] / statistics.median(m["times_s"]) for n, m in res["models"].items()}
    given = {n: c["sps"] for n, c in res["given"].items()}
    assert given == {"gpu (given)": 500.0}
    assert len(res["ratios"]) == len(loader) * (len(consumers) + len(given))
    seen = set()
    for q in res["ratios"]:
        r = loader[(q["kind"], q["manifest"], q["workers"])]
        load_sps = r["delivered_s"] / r["wall_s"]
        model_sps = (consumers if q["measured_here"] else given)[q["model"]]
        assert q["measured_here"] == (q["model"] in consumers)
        assert q["ratio"] == pytest.approx(load_sps / model_sps, rel=1e-9)
        assert q["workers_needed"] == math.ceil(model_sps / (load_sps / max(q["workers"], 1)))
        seen.add((q["kind"], q["manifest"], q["workers"], q["model"]))
    assert len(seen) == len(res["ratios"])


def test_machine_commit_and_given_marked(quick):
    res, md, out = quick
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert res["commit"].startswith(head) and f"commit {head}" in md
    assert res["machine"]["cpus"] >= 1 and res["machine"]["torch"] and res["machine"]["lhotse"]
    assert "machine:" in md and "load average at start" in md and "load average at end" in md
    assert "NOT measured in this run" in md and "NOT measured in this run" in out


@pytest.mark.parametrize("args, message", [
    (["--workers", "-1"], "--workers must be integers >= 0"),
    (["--workers", "one"], "--workers must be comma-separated integers"),
    (["--kinds", "mfcc"], "--kinds: unknown ['mfcc']"),
    (["--manifests", "parquet"], "--manifests: unknown ['parquet']"),
    (["--models", "conformer"], "--models: unknown ['conformer']"),
    (["--models", ","], "--models: none given"),
    (["--batches", "0"], "--batches must be at least 1"),
    (["--seconds", "0"], "--seconds must be positive"),
    (["--max-duration", "-5"], "--max-duration must be positive"),
    (["--gpu-audio-seconds-per-second", "0"], "--gpu-audio-seconds-per-second must be positive"),
    (["--gpu-audio-seconds-per-second", "9", "--gpu-step-json", "x.json"], "not both"),
    (["--gpu-step-json", "/nonexistent/step.json"], "--gpu-step-json /nonexistent/step.json"),
])
def test_argument_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e: _module().parse_args(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_gpu_step_json(tmp_path):
    "A step.py JSON made on a GPU gives each model's consumption: batch x seconds / median step time."
    p = tmp_path / "step.json"
    p.write_text(json.dumps(dict(machine=dict(device="cuda", cuda="NVIDIA H200"), batch=4, seconds=10.0, precision="bf16",
                                 started="2026-12-02 10:00:00", models=dict(zipformer=dict(median_s=0.05),
                                                                            hubert=dict(median_s=0.125)))))
    a = _module().parse_args(["--gpu-step-json", str(p)])
    assert {n: c["sps"] for n, c in a.given.items()} == {"zipformer [cuda, given]": 800.0, "hubert [cuda, given]": 320.0}
    assert all("NVIDIA H200" in c["source"] for c in a.given.values())
    a = _module().parse_args(["--quick", "--batches", "7"])
    assert (a.batches, a.corpus_hours, a.batch, a.seconds, a.max_duration) == (7, 0.1, 1, 2.0, 10.0)
    assert _module().parse_args([]).max_duration == 40.0
