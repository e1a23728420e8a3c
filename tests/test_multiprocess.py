"""Two processes joined by ``jax.distributed`` train, checkpoint and restore like one process
with all their devices.

Starts ``_multiprocess_worker.py`` twice on 127.0.0.1 (4 CPU devices each, gloo CPU
collectives) and once alone with 8 CPU devices. Both runs take the same ``optorth.muon`` steps
on the tiny model of ``_sharded_model.py`` under a 1-D FSDP mesh over the 8 devices (every
parameter sharded over both processes, so the Newton–Schulz stacks and the collectives span
them), save an Orbax checkpoint midway, and restore it under an HSDP mesh (replica 2 × fsdp 4)
to continue there. The final parameters and optimizer states of the two runs agree to 1e-6, and
in each run the restored-and-continued state agrees with the uninterrupted one to 1e-6. Every
process is bounded by a timeout here and stops itself at its own deadline.
"""

import os
import socket
import subprocess
import sys
import time

import _sharded_model as model
import numpy as np
import pytest
from _multiprocess_worker import STEPS

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_multiprocess_worker.py")
TIMEOUT = 240  # seconds, per run; each worker stops itself 20 s earlier
TOLERANCE = 1e-6


def _gloo_missing() -> str | None:
    """Why this jaxlib cannot run CPU collectives across processes, or ``None`` (also when
    jaxlib's layout is unknown: the test then runs and says what failed)."""
    try:
        from jax._src.lib import _jax
    except ImportError:
        return None
    if not hasattr(_jax, "make_gloo_tcp_collectives"):
        return "this jaxlib is built without the gloo CPU collectives"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    root = os.path.dirname(HERE)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, XLA_FLAGS=" ".join(flags), PYTHONPATH=path, JAX_PLATFORMS="cpu")


def _start(out, checkpoint, log, local_devices, *extra):
    """Starts a worker; its output goes to the file ``log`` (a chatty worker never blocks on a
    full pipe)."""
    command = [sys.executable, WORKER, "--out", str(out), "--checkpoint", str(checkpoint),
               "--local-devices", str(local_devices), "--deadline", str(TIMEOUT - 20),
               *map(str, extra)]
    with open(log, "w") as stream:
        process = subprocess.Popen(command, env=_env(), stdout=stream,
                                   stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def _wait_all(processes, timeout):
    """Waits for every process; kills the rest as soon as one fails or time runs out."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in processes):
        failed = any(p.poll() not in (None, 0) for p in processes)
        if failed or time.monotonic() > deadline:
            for p in processes:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.2)
    codes = [p.wait() for p in processes]
    assert codes == [0] * len(processes), "\n\n".join(
        f"process {i}: exit code {c}\n{p.log.read_text()[-4000:]}"
        for i, (c, p) in enumerate(zip(codes, processes, strict=True)))


def _assert_close(a, b, key):
    assert a.dtype == b.dtype and a.shape == b.shape, key
    np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE, err_msg=key)


@pytest.mark.slow
def test_two_processes_train_and_restore_like_one_process(tmp_path):
    reason = _gloo_missing()
    if reason:
        pytest.skip(reason)
    port = _free_port()
    joint, alone = tmp_path / "two_processes.npz", tmp_path / "one_process.npz"
    processes = [
        _start(joint, tmp_path / "two_processes_checkpoint", tmp_path / f"process_{i}.log", 4,
               "--port", port, "--num-processes", 2, "--process-id", i)
        for i in range(2)]
    processes.append(
        _start(alone, tmp_path / "one_process_checkpoint", tmp_path / "one_process.log", 8))
    _wait_all(processes, TIMEOUT)

    joint, alone = np.load(joint), np.load(alone)
    assert sorted(joint) == sorted(alone)
    for key in alone:
        _assert_close(joint[key], alone[key], key)
    uninterrupted = sorted(k for k in joint if k.startswith("['uninterrupted']"))
    assert len(uninterrupted) == len(joint) // 2
    for key in uninterrupted:
        restored = key.replace("['uninterrupted']", "['restored']", 1)
        _assert_close(joint[restored], joint[key], restored)

    # The steps moved the parameters and counted (a run that did nothing cannot pass).
    start = model.host_params()
    moved = [np.abs(alone[f"['uninterrupted'][0]['{m}']['{n}']"] - start[m][n]).max()
             for m in start for n in start[m]]
    assert min(moved) > 1e-3, moved
    counts = [alone[k] for k in uninterrupted if k.endswith(".count")]
    assert counts and all(int(c) == 2 * STEPS for c in counts), counts
