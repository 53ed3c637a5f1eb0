"""malloc tuning is applied on glibc and harmless elsewhere."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not a glibc system")
def test_tune_malloc_succeeds_on_glibc_and_allocation_still_works():
    code = ("from netbootd.runtime.memtune import tune_malloc; ok = tune_malloc(); "
            "bufs = [bytes(300 << 10) for _ in range(200)]; del bufs; print(ok)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr
