"""The ``lvm`` volume backend: thin volumes in an lvm2 thin pool, thin snapshots.

A pool is a thin pool LV inside a volume group (both made by the admin).  Volumes are
thin LVs (``lvcreate --type thin``), snapshots and clones are thin snapshots (``lvcreate
--snapshot``: copy-on-write, instant; a snapshot is made read-only with ``--permission r``,
a clone is writable; both activate like any volume, ``--setactivationskip n``).

lvm2 activates volumes through the kernel's device-mapper.  Where there is none (this
machine's kernel has no device-mapper: /dev/mapper/control is missing and ``dmsetup
version`` fails), ``LvmPool.open`` raises ``Unsupported`` with one line saying so.

Everything lvm2 is asked goes through the pure functions below: argv builders
(``cmd_*``), the JSON report parsers (``parse_*``, lvm2's ``--reportformat json`` with
``--units b --nosuffix``) and ``classify_error`` (stderr -> typed error).  They are
tested against lvm2's own output (tests/fixtures/lvm/, tests/interop/test_lvm.py).
``LVM_SUPPRESS_FD_WARNINGS=1`` keeps lvm2 from complaining about inherited descriptors.
``devices`` (lvm2's ``--devices``) limits every command to the listed PVs: nothing else
on the machine is scanned or touched.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
from typing import Callable, Optional, Sequence

from .volumes import (Capabilities, Exists, InUse, NoSpace, NotFound, PoolUsage, Progress,
                      Thresholds, Unsupported, Volume, VolumeError, check_name, check_resize,
                      check_size, check_space)

LV_FIELDS = ("lv_name,vg_name,lv_path,lv_size,lv_attr,pool_lv,origin,data_percent,"
             "metadata_percent,lv_time,lv_uuid")
VG_FIELDS = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,lv_count"
REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]
TIMEOUT = 120                      # seconds for one lvm2 command
VG_RE = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}")   # lvm2's VG name rule

Runner = Callable[[Sequence[str]], "tuple[int, str, str]"]     # argv -> (rc, stdout, stderr)


# ---------------------------------------------------------------- pure: commands

def lvm_env(base: Optional[dict] = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["LVM_SUPPRESS_FD_WARNINGS"] = "1"
    env.setdefault("LC_ALL", "C")          # messages in English: classify_error reads them
    return env


def _devices(devices: Sequence[str]) -> list[str]:
    out: list[str] = []
    for d in devices:
        out += ["--devices", d]
    return out


def cmd_vgs(vg: str, devices: Sequence[str] = ()) -> list[str]:
    return ["vgs", *_devices(devices), *REPORT, "-o", VG_FIELDS, vg]


def cmd_lvs(vg: str, devices: Sequence[str] = ()) -> list[str]:
    return ["lvs", *_devices(devices), *REPORT, "-a", "-o", LV_FIELDS, vg]


def cmd_create(vg: str, pool: str, name: str, size: int,
               devices: Sequence[str] = ()) -> list[str]:
    return ["lvcreate", *_devices(devices), "--type", "thin", "--virtualsize", f"{size}B",
            "--name", name, "--thinpool", pool, vg]


def cmd_snapshot(vg: str, source: str, name: str, readonly: bool,
                 devices: Sequence[str] = ()) -> list[str]:
    """A thin snapshot (no size given: lvm2 makes it thin, in the origin's pool)."""
    return ["lvcreate", *_devices(devices), "--snapshot", "--setactivationskip", "n",
            "--permission", "r" if readonly else "rw", "--name", name, f"{vg}/{source}"]


def cmd_resize(vg: str, name: str, size: int, force: bool,
               devices: Sequence[str] = ()) -> list[str]:
    # --force: lvm2 asks before reducing; the policy has already asked (check_resize)
    return ["lvresize", *_devices(devices), *(["--force"] if force else []),
            "--size", f"{size}B", f"{vg}/{name}"]


def cmd_remove(vg: str, name: str, devices: Sequence[str] = ()) -> list[str]:
    return ["lvremove", *_devices(devices), "--yes", f"{vg}/{name}"]


# ---------------------------------------------------------------- pure: reports

def parse_report(text: str, key: str) -> list[dict]:
    """The rows of an lvm2 JSON report (``{"report": [{"lv": [...]}]}``)."""
    try:
        data = json.loads(text)
        rows = [row for part in data["report"] for row in part.get(key, [])]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise VolumeError(f"not an lvm2 JSON report with {key!r} rows ({e}): "
                          f"{text[:120]!r}", "report", None) from None
    if not all(isinstance(r, dict) for r in rows):
        raise VolumeError(f"an lvm2 {key!r} row is not an object", "report", None)
    return rows


def parse_lv_time(text: str) -> Optional[float]:
    """lvm2's default lv_time ("2026-12-04 17:00:10 +0000") as epoch seconds."""
    try:
        return _dt.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S %z").timestamp()
    except (ValueError, AttributeError):
        return None


def _int(row: dict, key: str) -> int:
    try:
        return int(row[key])
    except (KeyError, ValueError, TypeError):
        raise VolumeError(f"lvm2 reported {key}={row.get(key)!r} for "
                          f"{row.get('lv_name') or row.get('vg_name')!r}, not a byte count "
                          "(was --units b --nosuffix lost?)", "report", None) from None


def _percent(row: dict, key: str) -> Optional[float]:
    """lvm2 leaves data_percent empty for an inactive LV (and without device-mapper)."""
    value = row.get(key, "")
    try:
        return float(value) if value not in ("", None) else None
    except ValueError:
        return None


def parse_lvs(text: str, pool: str) -> list[Volume]:
    """The thin volumes of ``pool`` in an lvs report (hidden and other LVs skipped)."""
    out = []
    for row in parse_report(text, "lv"):
        name = row.get("lv_name", "")
        if row.get("pool_lv") != pool or name.startswith("["):
            continue
        size = _int(row, "lv_size")
        pct = _percent(row, "data_percent")
        attr = row.get("lv_attr", "")
        out.append(Volume(
            name=name, size=size,
            used=round(size * pct / 100) if pct is not None else None,
            origin=row.get("origin") or None,
            kind="snapshot" if attr[1:2] == "r" else "volume",   # attr[1]: permissions
            created=parse_lv_time(row.get("lv_time", ""))))
    return sorted(out, key=lambda v: v.name)


def find_pool(text: str, pool: str) -> dict:
    """The thin pool's row of an lvs report (lv_attr 't...'), or ``NotFound``."""
    for row in parse_report(text, "lv"):
        if row.get("lv_name") == pool:
            if not row.get("lv_attr", "").startswith("t"):
                raise VolumeError(f"{row.get('vg_name')}/{pool} is not a thin pool "
                                  f"(lv_attr {row.get('lv_attr')!r})", "thin_pool", pool)
            return row
    raise NotFound(f"no thin pool {pool!r} in the volume group", "thin_pool", pool)


def pool_usage(text: str, pool: str) -> PoolUsage:
    """A thin pool's usage from one lvs report: its data size, data_percent, and the
    virtual sizes of its volumes."""
    row = find_pool(text, pool)
    total = _int(row, "lv_size")
    pct = _percent(row, "data_percent")
    if pct is None:
        raise VolumeError(f"thin pool {pool!r} reports no data usage (is it active?)",
                          "thin_pool", pool)
    used = round(total * pct / 100)
    vols = parse_lvs(text, pool)
    return PoolUsage(total=total, used=used, free=total - used,
                     provisioned=sum(v.size for v in vols), volumes=len(vols))


def parse_vg(text: str, vg: str) -> dict:
    for row in parse_report(text, "vg"):
        if row.get("vg_name") == vg:
            return {"name": vg, "size": _int(row, "vg_size"), "free": _int(row, "vg_free"),
                    "extent_size": _int(row, "vg_extent_size"),
                    "lv_count": _int(row, "lv_count")}
    raise NotFound(f"no volume group {vg!r}", "vg", vg)


# lvm2's messages (lib/metadata/lv_manip.c, tools/*.c), first match wins.
_ERRORS: list[tuple[str, type]] = [
    ("Required device-mapper target(s) not detected", Unsupported),
    ("Failure to communicate with kernel device-mapper", Unsupported),
    ("already exists in volume group", Exists),
    ("already exists in Volume group", Exists),
    ("Failed to find logical volume", NotFound),
    ("not found", NotFound),
    ("Insufficient free space", NoSpace),
    ("Insufficient suitable allocatable extents", NoSpace),
    ("free space in thin pool", NoSpace),
    ("in use", InUse),
    ("is used by another device", InUse),
]


def classify_error(argv: Sequence[str], rc: int, stderr: str, name: str = "",
                   field: str = "name") -> VolumeError:
    """A typed error from a failed lvm2 command: the type from lvm2's message, the
    message's most telling line as the reason."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    tool = argv[0] if argv else "lvm"
    for needle, kind in _ERRORS:
        line = next((ln for ln in lines if needle in ln), None)
        if line is None:
            continue
        if kind is Unsupported and "device-mapper" in needle:
            line = ("this kernel has no device-mapper: lvm2 cannot activate volumes "
                    f"({line})")
        reason = f"{tool}: {line}"
        if kind is NoSpace:
            return NoSpace(reason, need=0, free=0, floor=0, total=0, field="size")
        return kind(reason, field, name)
    last = lines[-1] if lines else f"exit status {rc}"
    return VolumeError(f"{tool} failed (rc {rc}): {last}", field, name)


def device_mapper_problem(control_exists: bool, dmsetup_rc: Optional[int],
                          dmsetup_err: str = "") -> Optional[str]:
    """Why lvm2 cannot activate volumes here, in one line, or None if it can."""
    if not control_exists:
        return ("this kernel has no device-mapper: /dev/mapper/control is missing, so "
                "lvm2 cannot activate volumes")
    if dmsetup_rc is None:
        return "lvm2's dmsetup is not installed (apt-get install lvm2)"
    if dmsetup_rc != 0:
        last = [ln.strip() for ln in dmsetup_err.splitlines() if ln.strip()]
        return (f"this kernel has no device-mapper: `dmsetup version` failed (rc "
                f"{dmsetup_rc}): {last[0] if last else 'no message'}")
    return None


# ---------------------------------------------------------------- the backend

def run_command(argv: Sequence[str]) -> tuple[int, str, str]:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, env=lvm_env(),
                           stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not installed (apt-get install lvm2)"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer in {TIMEOUT} s"
    return p.returncode, p.stdout, p.stderr


def probe_device_mapper(run: Runner = run_command) -> Optional[str]:
    """``device_mapper_problem`` for this machine."""
    control = os.path.exists("/dev/mapper/control")
    if not control:
        return device_mapper_problem(False, None)
    if shutil.which("dmsetup") is None:
        return device_mapper_problem(True, None)
    rc, _, err = run(["dmsetup", "version"])
    return device_mapper_problem(True, rc, err)


class LvmPool:
    """A ``VolumeBackend`` over one lvm2 thin pool.  Open it with ``LvmPool.open``."""

    kind = "lvm"
    capabilities = Capabilities(cow_clones=True, thin=True)

    def __init__(self, vg: str, thin_pool: str, name: str = "lvm",
                 thresholds: Thresholds = Thresholds(), devices: Sequence[str] = (),
                 run: Runner = run_command):
        if not isinstance(vg, str) or not VG_RE.fullmatch(vg) or vg in (".", ".."):
            raise VolumeError(f"{vg!r} is not a volume group name", "vg", vg)
        check_name(thin_pool, "thin_pool")
        self.vg, self.thin_pool, self.name = vg, thin_pool, name
        self.thresholds, self.devices, self._run = thresholds, tuple(devices), run

    @classmethod
    def open(cls, vg: str, thin_pool: str, name: str = "lvm",
             thresholds: Thresholds = Thresholds(), devices: Sequence[str] = (),
             run: Runner = run_command) -> "LvmPool":
        """The pool, after checking device-mapper, the VG and the thin pool exist."""
        problem = probe_device_mapper(run)
        if problem:
            raise Unsupported(problem, "backend", "lvm")
        pool = cls(vg, thin_pool, name, thresholds, devices, run)
        parse_vg(pool._lvm(cmd_vgs(vg, pool.devices), field="vg", name=vg), vg)
        find_pool(pool._lvs(), thin_pool)
        return pool

    def describe(self) -> str:
        return (f"lvm pool {self.name!r}: thin volumes in {self.vg}/{self.thin_pool}, "
                "thin snapshot clones (copy-on-write)")

    def create(self, name: str, size_bytes: int,
               progress: Optional[Progress] = None) -> Volume:
        check_name(name)
        check_size(size_bytes)
        text = self._lvs()
        self._refuse_taken(text, name, "name")
        check_space("create", name, pool_usage(text, self.thin_pool), self.thresholds,
                    grow=size_bytes, pool=self.name)
        self._lvm(cmd_create(self.vg, self.thin_pool, name, size_bytes, self.devices),
                  name=name)
        if progress:
            progress(size_bytes, size_bytes)
        return self.get(name)

    def snapshot(self, name: str, snap_name: str,
                 progress: Optional[Progress] = None) -> Volume:
        return self._snap(name, snap_name, True, progress, "snap_name")

    def clone(self, source: str, new_name: str,
              progress: Optional[Progress] = None) -> Volume:
        return self._snap(source, new_name, False, progress, "new_name")

    def resize(self, name: str, size_bytes: int, force: bool = False) -> Volume:
        vol = self.get(name)
        if vol.kind == "snapshot":
            raise VolumeError(f"{name!r} is a snapshot (read-only); clone it to get a "
                              "volume that can be resized", "name", name)
        new = check_resize(vol.size, size_bytes, force)
        if new > vol.size:
            check_space("resize", name, self.usage(), self.thresholds,
                        grow=new - vol.size, pool=self.name)
        if new != vol.size:
            self._lvm(cmd_resize(self.vg, name, new, force, self.devices), name=name)
        return self.get(name)

    def delete(self, name: str) -> None:
        self.get(name)
        self._lvm(cmd_remove(self.vg, name, self.devices), name=name)

    def get(self, name: str, field: str = "name") -> Volume:
        check_name(name, field)
        for v in self.list():
            if v.name == name:
                return v
        raise NotFound(f"no volume {name!r} in pool {self.name!r}", field, name)

    def list(self) -> list[Volume]:
        return parse_lvs(self._lvs(), self.thin_pool)

    def usage(self) -> PoolUsage:
        return pool_usage(self._lvs(), self.thin_pool)

    def path(self, name: str) -> str:
        self.get(name)
        return f"/dev/{self.vg}/{name}"

    # ------------------------------------------------------------ helpers

    def _snap(self, source: str, new: str, readonly: bool, progress: Optional[Progress],
              field: str) -> Volume:
        check_name(new, field)
        text = self._lvs()
        src = next((v for v in parse_lvs(text, self.thin_pool) if v.name == source), None)
        if src is None:
            check_name(source, "source")
            raise NotFound(f"no volume {source!r} in pool {self.name!r}", "source", source)
        self._refuse_taken(text, new, field)
        check_space("snapshot" if readonly else "clone", new,
                    pool_usage(text, self.thin_pool), self.thresholds, grow=src.size,
                    pool=self.name)
        self._lvm(cmd_snapshot(self.vg, source, new, readonly, self.devices), name=new,
                  field=field)
        if progress:
            progress(src.size, src.size)
        return self.get(new, field)

    def _refuse_taken(self, text: str, name: str, field: str) -> None:
        # any LV of the VG counts: lvm2 names are unique per VG, not per pool
        if any(r.get("lv_name") in (name, f"[{name}]") for r in parse_report(text, "lv")):
            raise Exists(f"{name!r} already exists in volume group {self.vg!r}", field, name)

    def _lvs(self) -> str:
        return self._lvm(cmd_lvs(self.vg, self.devices), field="vg", name=self.vg)

    def _lvm(self, argv: Sequence[str], name: str = "", field: str = "name") -> str:
        rc, out, err = self._run(argv)
        if rc != 0:
            raise classify_error(argv, rc, err, name, field)
        return out
