"""k2ssl-check-env names a broken environment in one line and exits 1: a torchaudio whose compiled library does not
load, and requirements that pip check finds inconsistent. Each fault is a stand-in package placed first on
PYTHONPATH of a fresh interpreter, so the real environment is untouched."""
import os, subprocess, sys, textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECK = "from k2ssl_lit.environment import check_env_cli; check_env_cli()"


def _run_with(tmp_path, files):
    "Run the check in a fresh interpreter whose PYTHONPATH starts with the stand-in `files` (path -> text)."
    for rel, text in files.items():
        p = tmp_path / rel; p.parent.mkdir(parents=True, exist_ok=True); p.write_text(textwrap.dedent(text))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=600)


def test_healthy_environment_passes(tmp_path):
    r = _run_with(tmp_path, {})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "k2ssl-check-env: environment ok" in r.stdout
    assert r.stdout.count("k2ssl-check-env: ok  ") == 5


def test_torchaudio_that_does_not_load_is_named_in_one_line(tmp_path):
    # torchaudio 2.11.1 on torch 2.11.0 fails like this, raised the way torchaudio's loader chains it
    r = _run_with(tmp_path, {"torchaudio/__init__.py": """
        try:
            raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")
        except OSError as e:
            raise OSError("Could not load this library: _torchaudio.so") from e
        """})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    fail = [l for l in r.stderr.splitlines() if l.startswith("k2ssl-check-env: FAILED")]
    assert len(fail) == 1, r.stderr
    assert "torchaudio" in fail[0] and "undefined symbol: torch_exception_get_what_without_backtrace" in fail[0]
    assert "pip install torch==" in fail[0] and "torchaudio==" in fail[0]
    # the other checks still ran and passed
    assert "ok    torch: torch " in r.stdout and "ok    lhotse:" in r.stdout


def test_inconsistent_requirements_fail_first(tmp_path):
    r = _run_with(tmp_path, {"pip/__init__.py": "", "pip/__main__.py": """
        import sys
        print("lhotse 1.33.0 has requirement numpy<2, but you have numpy 2.4.6.")
        sys.exit(1)
        """})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[0].startswith("k2ssl-check-env: FAIL  requirements: pip check: lhotse 1.33.0")
    assert "FAILED: requirements" in r.stderr
