"""The wheel carries what the code finds through importlib.resources (boot
templates, the agent's initrd sources, the status page's assets, SQL
migrations), and an installed wheel - away from this checkout - finds them.

Builds a real wheel with pip (build dependencies from the configured package
index) from a copy of the sources, so no build/ or egg-info lands in the tree."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("netbootd", "iso_builder")


def _data_files() -> set[str]:
    """Every file in the packages that is not Python source: package data."""
    out = set()
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*"):
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts:
                out.add(p.relative_to(ROOT).as_posix())
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "-w", str(tmp / "out"), str(src)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "No matching distribution" in r.stderr + r.stdout:
        pytest.skip(f"no build backend available: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stderr
    wheels = list((tmp / "out").glob("netbootd-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_the_wheel_holds_the_templates_agent_sources_web_assets_and_every_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "netbootd/boot_templates/discover.ipxe.j2" in names
    assert {"iso_builder/agent/init", "iso_builder/agent/udhcpc.script"} <= names
    assert {"netbootd/web/static/status.js", "netbootd/web/templates/status.html"} <= names
    assert _data_files() - names == set(), "package data missing from pyproject.toml"


def test_an_installed_wheel_finds_its_boot_templates_and_agent_sources(wheel, tmp_path):
    """Installed into a fresh venv (dependencies borrowed from this one by a
    path entry, the checkout nowhere on sys.path): `config check` loads every
    boot template as `serve` does, and the initrd sources are found."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", site, str(wheel)], check=True, timeout=120)
    # A plain path entry: this venv's packages (twisted, jinja2...) but not its
    # .pth files, so the editable install of the checkout stays out.
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    cfg = tmp_path / "netbootd.toml"
    cfg.write_text("")
    run = tmp_path / "run"
    run.mkdir()
    r = subprocess.run([str(py), "-I", "-m", "netbootd", "config", "check", str(cfg)],
                       cwd=run, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    r = subprocess.run([str(py), "-I", "-c",
                        "import netbootd, iso_builder.initrd as i, netbootd.policy.boot as b;"
                        "print(netbootd.__file__); print(b.default_templates_dir());"
                        "print(i.INITRD_SRC); print(sorted(p.name for p in i.INITRD_SRC.iterdir()))"],
                       cwd=run, capture_output=True, text=True, timeout=60)
    where, templates, agent, files = r.stdout.splitlines()
    assert where.startswith(site) and templates.startswith(site) and agent.startswith(site), \
        r.stdout
    assert "'init'" in files and "'udhcpc.script'" in files, files
