"""Running a test file again in a fresh process with simulated CPU devices.

A process must ask for its device count before JAX starts its backend, and the suite runs on
one device; so a file whose cases need 8 devices starts itself (and any other test paths) again
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``, in this run's tier.
"""

from __future__ import annotations

import os
import subprocess
import sys


def rerun_on_devices(request, paths, devices: int = 8, timeout: int = 1800) -> None:
    """Runs ``pytest paths`` with ``devices`` simulated devices; fails with its output."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=(
        f"{flags} --xla_force_host_platform_device_count={devices}".strip()))
    command = [sys.executable, "-m", "pytest", *paths, "-q", "-x", "-p", "no:cacheprovider"]
    for option in ("--tier", "-m"):
        value = request.config.getoption(option)
        if value:
            command += [option, value]
    if not request.config.getoption("--tier") and not request.config.getoption("-m"):
        command += ["--tier", "all"]  # this test was selected, so its cases are too
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
