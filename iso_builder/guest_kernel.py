"""A guest kernel's modules, as the initrd carries them: which kernels are installed,
what their modules.dep and modules.builtin say, and in what order to load a set of drivers.

Lists directories and parses the tables' text; starts no process and reads no .ko
(iso_builder/initrd.py reads and decompresses those: busybox insmod needs them plain).
iso_builder/initrd.py re-exports these names; its build_archive is the caller.
"""
from __future__ import annotations

import re
from pathlib import Path

MODULES_ROOT = Path("/lib/modules")
BOOT_DIR = Path("/boot")

# modules.dep lists symbol dependencies only.  A virtio NIC also needs its PCI
# transport, which virtio_net does not import symbols from: without virtio_pci
# the virtio device is never created and virtio_net binds to nothing.
COMPANIONS = {"virtio_net": ("virtio_pci",), "virtio_blk": ("virtio_pci",),
              "virtio_scsi": ("virtio_pci",)}


# -- guest kernels ---------------------------------------------------------------
def _version_key(v: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+~]", v)]


def guest_kernels(modules_root: Path = MODULES_ROOT, boot_dir: Path = BOOT_DIR) -> list[dict]:
    """Kernels with both modules (modules.dep) and a /boot/vmlinuz-<kver>, oldest first."""
    out = []
    if not modules_root.is_dir():
        return out
    for d in modules_root.iterdir():
        vmlinuz = boot_dir / f"vmlinuz-{d.name}"
        if (d / "modules.dep").is_file() and vmlinuz.is_file():
            out.append({"version": d.name, "vmlinuz": str(vmlinuz), "modules": str(d)})
    return sorted(out, key=lambda k: _version_key(k["version"]))


# -- module dependencies ----------------------------------------------------------
_KO_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(path: str) -> str:
    """'kernel/drivers/net/virtio_net.ko.xz' -> 'virtio_net' ('-' and '_' are one)."""
    base = path.rsplit("/", 1)[-1]
    for suf in _KO_SUFFIXES:
        if base.endswith(suf):
            base = base[: -len(suf)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep -> {name: (relative path, [dependency paths as listed])}."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        path = path.strip()
        deps[module_name(path)] = (path, rest.split())
    return deps


def parse_builtin(text: str) -> set[str]:
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def resolve_modules(names, deps: dict[str, tuple[str, list[str]]], builtin: set[str],
                    companions: dict[str, tuple[str, ...]] = COMPANIONS
                    ) -> tuple[list[str], list[str], list[str]]:
    """Load order for `names`: returns (paths in load order, built-in names, missing names).

    Dependencies come before the modules needing them (depth-first, post-order);
    modprobe reads a modules.dep line's dependency list from its end, so we
    visit it reversed to keep modprobe's order.  Companions (see COMPANIONS)
    are added only when the kernel has them as modules.
    """
    order: list[str] = []
    seen: set[str] = set()
    built: list[str] = []
    missing: list[str] = []
    by_path = {path: name for name, (path, _) in deps.items()}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in stack:  # a cycle in modules.dep: depmod refuses those, be safe anyway
            return
        if name not in deps:  # a dependency without its own line: a broken modules.dep
            if name not in missing:
                missing.append(name)
            return
        path, needs = deps[name]
        for dep_path in reversed(needs):
            visit(by_path.get(dep_path, module_name(dep_path)), stack + (name,))
        seen.add(name)
        order.append(path)

    wanted: list[str] = []
    for n in names:
        n = n.replace("-", "_")
        wanted.append(n)
        wanted.extend(c for c in companions.get(n, ()) if c in deps)
    for n in wanted:
        if n in deps:
            visit(n, ())
        elif n in builtin:
            if n not in built:
                built.append(n)
        elif n not in missing:
            missing.append(n)
    return order, built, missing


def uncompressed_name(rel: str) -> str:
    for suf in (".xz", ".zst", ".gz"):
        if rel.endswith(".ko" + suf):
            return rel[: -len(suf)]
    return rel
