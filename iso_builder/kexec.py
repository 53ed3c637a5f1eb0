"""kexec for the discover initrd: Debian's kexec-tools binary and its shared libraries.

busybox has no kexec, and Debian's /sbin/kexec is dynamically linked (libc and,
through libxenctrl, a handful of Xen libraries).  The initrd carries it as:

    /usr/sbin/kexec                 the binary
    /usr/lib/netbootd/<soname>      every library it needs (the agent runs it
                                    with LD_LIBRARY_PATH=/usr/lib/netbootd)
    /lib64/ld-linux-x86-64.so.2     its ELF interpreter, at the path it names

Where the binary comes from, first found wins: $NETBOOTD_KEXEC (a path, or
"none" for an initrd without kexec), an installed kexec-tools (/sbin/kexec), our
cache (<cache>/kexec-tools/root), or - only with fetch=True, i.e. the install
step and `netbootd initrd build`, never a running daemon - `apt-get download
kexec-tools` (+ the library packages it lacks) unpacked with `dpkg -x` into the
cache.  Nothing is installed on the build machine, so nothing can arm kexec for
its own reboots.  Without kexec the agent reports that and reboots instead.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import debs

SYSTEM_KEXEC = (Path("/sbin/kexec"), Path("/usr/sbin/kexec"))
LIB_DIR = "usr/lib/netbootd"        # in the initrd (actions.sh: KEXEC_LIBS)
BIN_PATH = "usr/sbin/kexec"
MAX_PACKAGES = 40                  # bound on what one fetch may download


class KexecError(RuntimeError):
    pass


def cache_root(cache: Path) -> Path:
    return cache / "kexec-tools" / "root"


def _lib_dirs(root: Path) -> list[str]:
    dirs = []
    for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib",
              "lib64", "usr/lib64"):
        if (root / d).is_dir():
            dirs.append(str(root / d))
    return dirs


def find_binary(env_var: str, candidates, fetch) -> Path | None:
    """$env_var (a path, or "none"), else the first candidate that is a file,
    else fetch() when it is not None, else None."""
    env = os.environ.get(env_var)
    if env:
        if env == "none":
            return None
        if not Path(env).is_file():
            raise KexecError(f"{env_var}={env} is not a file")
        return Path(env)
    for cand in candidates:
        if cand.is_file():
            return cand
    return fetch() if fetch is not None else None


def find_kexec(cache: Path, fetch: bool = False) -> Path | None:
    """The kexec binary to pack, or None (an initrd without kexec: boot falls back to reboot)."""
    return find_binary("NETBOOTD_KEXEC", (*SYSTEM_KEXEC, cache_root(cache) / "sbin" / "kexec"),
                       (lambda: _fetch(cache_root(cache))) if fetch else None)


def pick(cache: Path, fetch: bool = False) -> tuple[Path | None, str | None]:
    """(kexec to pack, None), (None, None) when there is none, or (None, why) when
    the one found cannot be packed (its libraries are missing, the fetch failed)."""
    try:
        binary = find_kexec(cache, fetch)
        if binary is not None:
            files_for_initrd(binary)
        return binary, None
    except (OSError, KexecError) as e:
        return None, str(e)


_LDD_LINE = re.compile(r"^\s*(\S+)(?:\s+=>\s+(\S+|not found))?\s*(?:\(0x[0-9a-f]+\))?\s*$")


def closure(binary: Path) -> tuple[Path | None, dict[str, Path], list[str]]:
    """(ELF interpreter, {soname: file}, [missing sonames]) for `binary`, by ldd;
    libraries of a kexec unpacked in the cache are found beside it."""
    if shutil.which("ldd") is None:
        raise KexecError("no ldd (Debian: libc-bin) to find kexec's libraries")
    env = dict(os.environ)
    root = binary.parent.parent            # <root>/sbin/kexec
    if root.name == "usr":                  # <root>/usr/bin/curl
        root = root.parent
    extra = _lib_dirs(root) if root != Path("/") else []
    if extra:
        env["LD_LIBRARY_PATH"] = ":".join(extra)
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30, env=env)
    if r.returncode != 0:
        raise KexecError(f"ldd {binary}: {(r.stderr or r.stdout).strip()}")
    interp, libs, missing = None, {}, []
    for line in r.stdout.splitlines():
        m = _LDD_LINE.match(line)
        if not m:
            continue
        name, target = m.group(1), m.group(2)
        if target == "not found":
            missing.append(name)
        elif target:
            libs[name] = Path(target)
        elif name.startswith("/"):
            interp = Path(name)          # "/lib64/ld-linux-x86-64.so.2 (0x...)"
    return interp, libs, missing


def files_for_initrd(binary: Path, bin_path: str = BIN_PATH) -> list[tuple[str, bytes, int]]:
    """(path in the archive, bytes, mode) for kexec (or another binary packed the
    same way, iso_builder/tlsclient.py), its interpreter and its libraries."""
    interp, libs, missing = closure(binary)
    if missing:
        raise KexecError(f"{binary} needs libraries that are not available: {', '.join(missing)}")
    out = [(bin_path, binary.read_bytes(), 0o755)]
    if interp is not None:
        out.append((str(interp).lstrip("/"), interp.resolve().read_bytes(), 0o755))
    for soname, path in sorted(libs.items()):
        if "/" in soname:
            continue
        out.append((f"{LIB_DIR}/{soname}", path.resolve().read_bytes(), 0o644))
    return out


# -- fetching (install step / `netbootd initrd build` only) -----------------------
def _installed(pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                       text=True, timeout=30)
    return r.returncode == 0 and "install ok installed" in r.stdout


def _depends(deb: Path) -> list[str]:
    """Package names of a .deb's Depends/Pre-Depends (first alternative, no versions)."""
    names = []
    for field in ("Pre-Depends", "Depends"):
        r = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True,
                           timeout=30)
        for dep in r.stdout.replace("\n", " ").split(","):
            first = dep.split("|")[0].strip()
            name = re.split(r"[\s(:]", first, maxsplit=1)[0]
            if name:
                names.append(name)
    return names


def _fetch(dest: Path) -> Path:
    return fetch_binary("kexec-tools", "sbin/kexec", dest)


def fetch_binary(package: str, rel: str, dest: Path, max_packages: int = MAX_PACKAGES) -> Path:
    """apt-get download `package` and, while ldd still misses a library of its
    binary `rel`, the not-installed packages it depends on; unpack them all under
    `dest`.  Returns dest/rel."""
    try:
        debs.require_tools("apt-get", "dpkg", "dpkg-deb", "dpkg-query",
                           what=f"{package} (none installed)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            root = Path(tmp) / "root"
            seen: set[str] = {package, "debconf", "debconf-2.0"}
            unpacked: set[Path] = set()
            want = [package]
            while want:
                if len(seen) > max_packages:
                    raise KexecError(f"{package} needs more than {max_packages} packages")
                for deb in debs.download(want, Path(tmp)):
                    if deb not in unpacked:
                        debs.unpack(deb, root)
                        unpacked.add(deb)
                if not (root / rel).is_file():
                    raise KexecError(f"the {package} package has no {rel}")
                _, _, missing = closure(root / rel)
                if not missing:
                    break
                want = [d for deb in sorted(unpacked) for d in _depends(deb) if d not in seen]
                seen.update(want)
                want = [d for d in dict.fromkeys(want) if not _installed(d)]
                if not want:
                    raise KexecError(f"{rel} still misses {', '.join(missing)} and no "
                                     "package is left to fetch")
            return debs.publish(root, dest, rel)
    except debs.DebError as e:
        raise KexecError(str(e)) from None
