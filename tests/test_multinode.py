"""The README's multi-node command, run: two torchrun "nodes" on localhost (one gloo process each) joined by a c10d
rendezvous train disjoint batches and end with the same model as one node running two processes; under
--max-restarts a node whose worker is killed restarts with the other, both resume from the last checkpoint and end
with the uninterrupted run's model. CPU, tiny model, random labels."""
import os, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest

from k2ssl_lit.presets import load_checkpoint
from k2ssl_lit.train import latest_checkpoint
from test_train import ENV, _batch_log, _cfg, _expected, _torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _node(cfg_path, port: int, host: bool, max_restarts: int = 0, out=subprocess.PIPE, env=ENV):
    "One node of the README's command: `torchrun --nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=...`."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=k2ssl-test",
           f"--rdzv_conf=is_host={str(host).lower()},join_timeout=120", f"--max-restarts={max_restarts}",
           "--monitor-interval=0.2", "-m", "k2ssl_lit.train", "--config", str(cfg_path)]
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)


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


def _pids(marker: str) -> list[int]:
    "Live processes whose command line contains `marker` (a test's own folder): its agents and their workers."
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid(): continue
        try: cmd = (d / "cmdline").read_bytes()  # empty for a zombie
        except OSError: continue
        if marker.encode() in cmd: found.append(int(d.name))
    return found


def _stop_all(nodes, marker: str) -> list[int]:
    "End the agents (SIGTERM: they stop their workers) and then, by pid, anything of this test still alive; those pids."
    for n in nodes:
        if n.poll() is None: n.terminate()
    deadline = time.time() + 15
    while time.time() < deadline and any(n.poll() is None for n in nodes): time.sleep(0.1)
    stray = _pids(marker)  # torchrun starts each worker in a session of its own: a killed agent leaves it running
    for pid in stray:
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass
    for n in nodes: n.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and _pids(marker): time.sleep(0.1)
    return stray


@pytest.fixture(scope="module")
def straight(manifest, tmp_path_factory):
    "6 steps, checkpoints every 2, one node with two processes, never interrupted: (config, final parameters)."
    d = tmp_path_factory.mktemp("straight")
    cfg = _cfg(manifest, d / "exp", max_steps=6, checkpoint_every=2, keep_last=10); cfg.save(d / "cfg.yaml")
    p = _torchrun(d / "cfg.yaml", nproc=2)
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out[-3000:]
    return cfg, _params(cfg.exp_dir)


# torch 2.14's agents share one store across rendezvous rounds and each caches where it is; a fresh agent (a node
# started again) reads the address under the new round's keys, which nobody writes, and waits there for ever
# (rendezvous/dynamic_rendezvous.py:1209-1218, api.py:102). TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 publishes it again
# every round (the workers' rank 0 then hosts their store).
FRESH_STORE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the test's processes through /proc")
@pytest.mark.parametrize("kill", ["worker1", "worker0", "node1"])  # node 0's agent hosts the rendezvous store
def test_killed_node_restarts_and_resumes(manifest, tmp_path, straight, kill):
    """--max-restarts=1; after the step-2 checkpoint, SIGKILL one node's worker (worker0, worker1) or the whole node
    1 (agent and worker; it is started again): both nodes start new workers in a new rendezvous round, resume from
    the checkpoint, finish (both agents exit 0) and end with the uninterrupted run's batches and model."""
    steps, every, port, marker = 6, 2, _free_port(), str(tmp_path)
    cfg = _cfg(manifest, tmp_path / "exp", max_steps=steps, checkpoint_every=every, keep_last=10); cfg.save(tmp_path / "cfg.yaml")
    env, rank = ENV | (FRESH_STORE if kill == "node1" else {}), int(kill[-1])
    logs = [open(tmp_path / f"node{i}.log", "w") for i in (0, 1, 2)]
    start = lambda i, log: _node(tmp_path / "cfg.yaml", port, host=i == 0, max_restarts=1, out=log, env=env)
    agents, killed, t0 = [], None, time.time()
    try:
        agents = [start(0, logs[0]), start(1, logs[1])]
        nodes = list(agents)
        while killed is None and time.time() - t0 < 150 and all(n.poll() is None for n in nodes):
            log = _batch_log(cfg.exp_dir, rank)  # rank = node here; step 3's batch: the step-2 checkpoint is written
            if log and log[-1]["step"] >= 3 and log[-1]["restart"] == 0:
                killed, t_kill = log[-1], time.time()
                os.kill(killed["pid"], signal.SIGKILL)
                if kill == "node1":  # the agent too (the worker first: alone, it would train on to the next checkpoint)
                    os.kill(nodes[1].pid, signal.SIGKILL); nodes[1].wait(timeout=30)
                    nodes[1] = start(1, logs[2]); agents.append(nodes[1])
            time.sleep(0.05)
        deadline = time.time() + 120  # about 12 s (worker killed) or 25 s (node killed) on two busy cores
        while time.time() < deadline and any(n.poll() is None for n in nodes): time.sleep(0.2)
        codes = [n.poll() for n in nodes]
    finally:
        stray = _stop_all(agents, marker)
        for f in logs: f.close()
        left = _pids(marker)
    out = "\n".join(f"--- {f.name}\n" + Path(f.name).read_text()[-2500:] for f in logs)
    assert not left, f"processes left running: {left}"
    assert killed is not None, "the worker never reached step 3\n" + out
    assert codes == [0, 0], f"agents: {codes} {time.time() - t_kill:.0f} s after the kill\n" + out
    assert not stray, f"workers outlived their agents: {stray}"
    for r in (0, 1):
        log = _batch_log(cfg.exp_dir, r)
        first, second = [e for e in log if e["pid"] == log[0]["pid"]], [e for e in log if e["pid"] != log[0]["pid"]]
        assert log == first + second and len({e["pid"] for e in second}) == 1, f"rank {r}: not one restart"
        if kill != "node1":  # the restart count the ranks agree on: the killed node's (the other's may stay 0)
            assert {e["restart"] for e in second} == {1}, f"rank {r}: {second[0]}"
        assert second[0]["step"] == every, second[0]  # resumed from the step-2 checkpoint
        kept = [e["cut_ids"] for e in first if e["step"] < every]
        assert kept + [e["cut_ids"] for e in second] == _expected(manifest, r, 2, steps), f"rank {r}: batches lost or repeated"
        assert [e["cut_ids"] for e in second] == [e["cut_ids"] for e in _batch_log(straight[0].exp_dir, r)][every:]
    a, b = _params(cfg.exp_dir), straight[1]
    assert max(float((a[n].float() - b[n].float()).abs().max()) for n in a) <= 1e-6
