"""No process outlives the run that started it, however the run ends."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest


def _tagged(tag: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose environment carries the tag."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"COTBENCH_TEST_TAG={tag}".encode() not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
            if "zombie" in state:
                continue
            found.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, StopIteration):
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_no_process_of_a_killed_run_remains(how, tiny_model, tmp_path):
    tag = uuid.uuid4().hex
    env = dict(os.environ, COTBENCH_TEST_TAG=tag, HF_HUB_OFFLINE="1")
    run = subprocess.Popen([sys.executable, "-m", "cotbench", "run", "--model", str(tiny_model), "--tasks",
                            "arithmetic", "--n", "60", "--max-new-tokens", "24", "--batch-size", "2",
                            "--dtype", "float32", "--out", str(tmp_path / "run")], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any("cotbench.grading._worker" in cmd for _, cmd in _tagged(tag)):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before its grading worker started"
        time.sleep(0.2)
    time.sleep(1.0)  # mid-sweep
    run.send_signal(how)
    run.wait(timeout=60)
    deadline = time.monotonic() + 20
    while _tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _tagged(tag)
    for pid, _ in left:  # don't leave them for the next test either
        os.kill(pid, signal.SIGKILL)
    assert not left, left
