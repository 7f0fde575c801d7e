"""benchmarks/gpu_check.py without a GPU and without running its parts (a full CPU dry run takes minutes, too long for
CI): argument handling, where results go, the commands of a real run and of a dry run, the refusal without CUDA, the
timeout that ends a part's whole process group, and the results file written from canned part outputs. Also the
argument checks of benchmarks/step.py's --precision and icefall anchors."""
import importlib.util, json, sys, time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


gc = _load("gpu_check")


def test_arguments_and_results_path(tmp_path):
    a = gc.parse_args([])
    assert a.parts == list(gc.PARTS) and a.budget == gc.BUDGET_S and not a.dry_run
    assert gc.results_path(a, "2026-12-02") == ROOT / "benchmarks" / "results" / "gpu_check_2026-12-02.md"
    d = gc.parse_args(["--dry-run", "--parts", "tests, kmeans"])
    assert d.parts == ["tests", "kmeans"] and d.budget == gc.DRY_BUDGET_S
    dry = gc.results_path(d, "2026-12-02")
    assert dry.name == "gpu_check_2026-12-02_cpu_dryrun.md" and ROOT / "benchmarks" / "results" not in dry.parents
    assert gc.results_path(gc.parse_args(["--out", str(tmp_path / "r.md")]), "x") == tmp_path / "r.md"
    assert sum(gc.TIMEOUTS[p] for p in gc.PARTS) + 15 <= gc.BUDGET_S  # the parts fit the 8 minutes with room to write the file
    for bad in (["--parts", "tests,gpu"], ["--parts", ","], ["--icefall", str(tmp_path)], ["--budget", "0"]):
        with pytest.raises(SystemExit): gc.parse_args(bad)


def test_commands_real_and_dry(tmp_path):
    (tmp_path / "egs" / "librispeech" / "SSL").mkdir(parents=True)
    real = gc.commands(gc.parse_args(["--icefall", str(tmp_path)]))
    assert real["tests"][1] == {"K2SSL_TEST_DEVICE": "cuda"} and real["tests"][0][-1] == "tests/test_cuda.py"
    step = real["step"][0]
    assert {"--device=cuda", "--precision=bf16", "--models=all", f"--icefall={tmp_path}"} <= set(step)
    assert not any(x.startswith("--batch") for x in step)  # full size: 4 x 10 s
    assert {"--device=cuda", "--frames=1000000", "--k=500", "--dim=768", "--out=-"} <= set(real["kmeans"][0])
    dry = gc.commands(gc.parse_args(["--dry-run"]))
    assert dry["tests"][1] == {"K2SSL_TEST_DEVICE": "cpu"}
    assert {"--device=cpu", "--batch=1", "--seconds=2", "--steps=1"} <= set(dry["step"][0])
    assert {"--device=cpu", "--frames=20000"} <= set(dry["kmeans"][0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_refuses_without_cuda(tmp_path, capsys):
    assert gc.main(["--out", str(tmp_path / "r.md")]) == 2
    assert "--dry-run" in capsys.readouterr().err and not (tmp_path / "r.md").exists()


def test_timeout_kills_the_process_group():
    "A part that outlives its timeout is ended with its children (a shell's background sleep included)."
    t0 = time.perf_counter()
    r = gc.run_part(["bash", "-c", "echo started; sleep 60 & sleep 60"], {}, timeout=1)
    assert r["status"] == "timed out" and r["output"] == ["started"] and time.perf_counter() - t0 < 10
    ok = gc.run_part([sys.executable, "-c", "print('a'); print('b')"], {}, timeout=30)
    assert ok["status"] == "passed" and ok["output"] == ["a", "b"]
    bad = gc.run_part([sys.executable, "-c", "raise SystemExit(3)"], {}, timeout=30)
    assert bad["status"] == "failed (exit 3)"


def test_results_file_from_canned_parts(tmp_path, monkeypatch):
    "main() with the parts replaced by canned outputs: one file with the machine, a summary and each part's figures."
    step_figures = {"machine": {"device": "cpu"}, "models": {
        "hubert": dict(source="presets", median_s=0.5, peak_net_gb=1.0),
        "zipformer": dict(source="presets", median_s=0.2, peak_net_gb=0.5)},
        "aims": [dict(name="hubert time / zipformer time", value=2.5, aim=2.4, op=">=", met=True)]}
    def fake(cmd, env, timeout):
        if "benchmarks/step.py" in cmd:
            Path(next(c for c in cmd if c.startswith("--json=")).split("=", 1)[1]).write_text(json.dumps(step_figures))
            return dict(status="passed", rc=0, seconds=3.0, timeout=timeout, output=["step output"])
        if "benchmarks/kmeans_assign.py" in cmd:
            return dict(status="timed out", rc=-9, seconds=timeout, timeout=timeout,
                        output=["labels identical to scikit-learn's float64 predict on all 20000 frames"])
        return dict(status="passed", rc=0, seconds=1.0, timeout=timeout, output=["....", "20 passed, 2 skipped in 9.1s"])
    monkeypatch.setattr(gc, "run_part", fake)
    out = tmp_path / "r.md"
    assert gc.main(["--dry-run", "--out", str(out)]) == 1  # the k-means part timed out
    text = out.read_text()
    assert text.startswith("# GPU check - CPU DRY RUN") and "## Machine" in text and "torch " in text
    assert "| tests | passed |" in text and "| kmeans | timed out |" in text
    assert "20 passed, 2 skipped" in text and "labels identical" in text
    assert "hubert time / zipformer time" in text and "2.50x  aim >= 2.4x: met" in text
    assert "icefall anchors: not run" in text or "icefall anchors: from" in text


def test_step_arguments():
    "step.py: --precision takes fp32/bf16/fp16 (fp32 by default); the icefall anchors need --icefall."
    step = _load("step")
    for argv in (["--precision", "fp8"], ["--models", "icefall_hubert"], ["--models", "zipformer,nope"],
                 ["--icefall", "/nonexistent", "--models", "hubert"]):
        with pytest.raises(SystemExit): step.main(argv)
    assert step.PRECISIONS == ("fp32", "bf16", "fp16") and set(step.ANCHORS) == {"icefall_hubert", "icefall_zipformer"}
    with pytest.raises(ValueError, match="--icefall"): step.build("icefall_zipformer", 10, None)


def test_extra_parts(tmp_path):
    "loader and compile run only when named (or with 'all'), add their timeouts to the budget, and the loader part reads "
    "the GPU steps that the step part writes."
    assert not set(gc.EXTRA_PARTS) & set(gc.parse_args([]).parts)
    a = gc.parse_args(["--parts", "all"])
    assert a.parts == list(gc.PARTS + gc.EXTRA_PARTS)
    assert a.budget == gc.BUDGET_S + sum(gc.TIMEOUTS[p] for p in gc.EXTRA_PARTS)
    cmds = gc.commands(a)
    assert {"--device=cuda", "--precision=bf16", "--modes=layers"} <= set(cmds["compile"][0])
    assert "benchmarks/loader.py" in cmds["loader"][0] and "--out=-" in cmds["loader"][0]
    dry = gc.commands(gc.parse_args(["--dry-run", "--parts", "loader,compile"]))
    assert "--quick" in dry["loader"][0] and {"--device=cpu", "--models=hubert"} <= set(dry["compile"][0])
