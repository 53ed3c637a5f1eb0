"""pytest fixtures for the interop tests; the library lives in harness.py."""
from __future__ import annotations

import pytest
from pathlib import Path

from netbootd.lab import netns as labnet

from .harness import Netbootd, require_lab


@pytest.fixture
def lab():
    require_lab()
    lb = labnet.Lab()
    try:
        yield lb
    finally:
        lb.close()


@pytest.fixture
def netbootd_factory(lab, tmp_path):
    """netbootd_factory(ns, args, state_dir=None, name="netbootd") -> Netbootd (not started)."""
    made: list[Netbootd] = []

    def make(ns: str, args: list[str], state_dir: Path | None = None,
             name: str = "netbootd") -> Netbootd:
        sd = state_dir or (tmp_path / f"{name}-state")
        nb = Netbootd(lab, ns, sd, args, tmp_path / f"{name}.log")
        made.append(nb)
        return nb

    yield make
    for nb in made:
        if nb.alive():
            rc = nb.stop()
            if rc not in (0, None):
                print(f"netbootd exited {rc} on SIGTERM; log tail:\n{nb.log_tail(20)}")
