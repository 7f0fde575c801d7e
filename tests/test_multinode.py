"""The README's multi-node command, run: two torchrun "nodes" on localhost (one gloo process each) joined by a c10d
rendezvous train disjoint batches and end with the same model as one node running two processes. CPU, tiny model,
random labels."""
import socket, subprocess, sys

from k2ssl_lit.presets import load_checkpoint
from k2ssl_lit.train import latest_checkpoint
from test_train import ENV, _batch_log, _cfg, _expected, _torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _node(cfg_path, port: int, host: bool, max_restarts: int = 0):
    "One node of the README's command: `torchrun --nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=...`."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=k2ssl-test",
           f"--rdzv_conf=is_host={str(host).lower()},join_timeout=120", f"--max-restarts={max_restarts}",
           "--monitor-interval=0.2", "-m", "k2ssl_lit.train", "--config", str(cfg_path)]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _params(exp):
    return load_checkpoint(latest_checkpoint(exp)[0])["model"]


def test_two_nodes_match_one_node(manifest, tmp_path):
    "Two nodes x 1 process == one node x 2 processes: the same batches per rank and the same parameters."
    steps, port = 3, _free_port()
    multi = _cfg(manifest, tmp_path / "multi", max_steps=steps); multi.save(tmp_path / "multi.yaml")
    nodes = [_node(tmp_path / "multi.yaml", port, host=i == 0) for i in (0, 1)]
    outs = [n.communicate(timeout=240)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outs)
    single = _cfg(manifest, tmp_path / "single", max_steps=steps); single.save(tmp_path / "single.yaml")
    p = _torchrun(tmp_path / "single.yaml", nproc=2)
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out[-3000:]
    ids = [[e["cut_ids"] for e in _batch_log(multi.exp_dir, r)] for r in (0, 1)]
    assert not {c for b in ids[0] for c in b} & {c for b in ids[1] for c in b}, "the two nodes trained the same cut"
    for r in (0, 1):
        assert ids[r] == _expected(manifest, r, 2, steps)
        assert ids[r] == [e["cut_ids"] for e in _batch_log(single.exp_dir, r)]
    a, b = _params(multi.exp_dir), _params(single.exp_dir)
    assert max(float((a[n].float() - b[n].float()).abs().max()) for n in a) <= 1e-6
