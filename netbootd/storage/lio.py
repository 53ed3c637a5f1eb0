"""The ``lio`` export backend: the kernel's iSCSI target through rtslib-fb.

Needs configfs with the target subsystem (/sys/kernel/config/target) and the
rtslib-fb package.  This machine's kernel has neither configfs nor modules, so
``detect()`` raises ExportUnsupported in one line and the real backend's test
is skipped with that reason (the tgt backend is the one that runs here).
rtslib-fb 2.2.4 facts (LAB.md): ``RTSRoot()`` without configfs raises
FileNotFoundError('/proc/modules') chained from RTSLibError('Cannot mount
configfs'), so configfs is checked first and both errors are caught.

What an export is, as a pure plan (``plan_export``), applied in order:
backstore (fileio on the volume's path) -> target -> TPG 1, created disabled,
with generate_node_acls=0 (no demo mode: no ACL, no LUNs), authentication on
when CHAP is set, demo_mode_discovery=0 (discovery shows an initiator only the
targets whose ACL names it) -> portal -> the host's node ACL with CHAP (and
mutual CHAP) -> LUN 1 -> the ACL's mapped LUN 1 -> enable the TPG.  A process
killed before the last step leaves a disabled TPG nobody can log in to.
LIO numbers LUNs freely: LUN 1, as with tgt, keeps the SAN URI the same.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from ..policy.iscsi import Chap, target_iqn, validate_base, volume_of_target
from .exports import (SAN_LUN, BackendFailed, Export, ExportHealth, ExportSpec,
                      ExportUnsupported, NotExported)

CONFIGFS_TARGET = "/sys/kernel/config/target"
TPG_TAG = 1


def detect(configfs: str = CONFIGFS_TARGET) -> Any:
    """The rtslib_fb module when LIO can run here, else ExportUnsupported (one line)."""
    if not os.path.isdir(configfs):
        raise ExportUnsupported(f"this kernel has no configfs/LIO: {configfs} is missing "
                                "(use the tgt export backend)")
    try:
        import rtslib_fb                                  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ExportUnsupported("the lio export backend needs rtslib-fb "
                                "(pip install rtslib-fb)") from None
    try:
        rtslib_fb.RTSRoot()
    except (rtslib_fb.utils.RTSLibError, OSError) as e:
        raise ExportUnsupported(f"LIO is not usable here: {e}") from None
    return rtslib_fb


@dataclass(frozen=True)
class LioStep:
    """One object to create; `attrs` are plain values (no rtslib objects)."""
    kind: str            # backstore, target, tpg, portal, acl, lun, mapped_lun, enable
    attrs: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def get(self, key: str) -> Any:
        return dict(self.attrs)[key]


def backstore_name(volume: str) -> str:
    return f"nb-{volume}"


def plan_export(spec: ExportSpec, base: str, portal: str) -> list[LioStep]:
    """The objects one export is made of, in the order that is safe to die in."""
    ip, _, port = portal.rpartition(":")
    iqn = target_iqn(base, spec.volume)

    def chap_attrs(prefix: str, c: Optional[Chap]) -> tuple[tuple[str, Any], ...]:
        return ((f"{prefix}userid", c.user), (f"{prefix}password", c.secret)) if c else ()

    return [
        LioStep("backstore", (("name", backstore_name(spec.volume)), ("path", spec.path),
                              ("write_back", False))),
        LioStep("target", (("wwn", iqn),)),
        LioStep("tpg", (("tag", TPG_TAG), ("enable", False),
                        ("authentication", "1" if spec.chap else "0"),
                        ("generate_node_acls", "0"), ("demo_mode_write_protect", "1"),
                        ("cache_dynamic_acls", "0"), ("demo_mode_discovery", "0"))),
        LioStep("portal", (("ip", ip), ("port", int(port or 3260)))),
        LioStep("acl", (("initiator", spec.initiator_iqn),
                        *chap_attrs("chap_", spec.chap), *chap_attrs("chap_mutual_", spec.mutual))),
        LioStep("lun", (("lun", SAN_LUN), ("backstore", backstore_name(spec.volume)))),
        LioStep("mapped_lun", (("initiator", spec.initiator_iqn), ("mapped_lun", SAN_LUN),
                               ("tpg_lun", SAN_LUN), ("write_protect", False))),
        LioStep("enable", (("tag", TPG_TAG),)),
    ]


class LioBackend:
    """Applies ``plan_export`` with rtslib-fb.  Not run on this machine (no
    configfs); construction fails with ExportUnsupported there."""

    kind = "lio"

    def __init__(self, portal: str, base: str, *, configfs: str = CONFIGFS_TARGET):
        self.rtslib = detect(configfs)
        self.portal = portal
        self.base = validate_base(base)
        self._lock = threading.Lock()

    def _targets(self) -> dict[str, Any]:
        root = self.rtslib.RTSRoot()
        return {t.wwn: t for t in root.targets
                if t.fabric_module.name == "iscsi" and volume_of_target(self.base, t.wwn)}

    def _apply(self, steps: list[LioStep]) -> None:
        r = self.rtslib
        objs: dict[str, Any] = {}
        try:
            for s in steps:
                if s.kind == "backstore":
                    objs["so"] = r.FileIOStorageObject(s.get("name"), dev=s.get("path"),
                                                       write_back=s.get("write_back"))
                elif s.kind == "target":
                    objs["target"] = r.Target(r.FabricModule("iscsi"), s.get("wwn"))
                elif s.kind == "tpg":
                    tpg = objs["tpg"] = r.TPG(objs["target"], s.get("tag"))
                    tpg.enable = False
                    for k, v in s.attrs:
                        if k not in ("tag", "enable"):
                            tpg.set_attribute(k, v)
                elif s.kind == "portal":
                    r.NetworkPortal(objs["tpg"], s.get("ip"), s.get("port"))
                elif s.kind == "acl":
                    acl = objs["acl"] = r.NodeACL(objs["tpg"], s.get("initiator"))
                    for k, v in s.attrs:
                        if k != "initiator":
                            setattr(acl, k, v)
                elif s.kind == "lun":
                    objs["lun"] = r.LUN(objs["tpg"], s.get("lun"), objs["so"])
                elif s.kind == "mapped_lun":
                    r.MappedLUN(objs["acl"], s.get("mapped_lun"), objs["lun"],
                                write_protect=s.get("write_protect"))
                elif s.kind == "enable":
                    objs["tpg"].enable = True
        except (r.utils.RTSLibError, OSError) as e:
            raise BackendFailed(f"lio {s.kind}: {e}") from None

    def _delete(self, volume: str, target: Any) -> None:
        target.delete()
        for so in self.rtslib.RTSRoot().storage_objects:
            if so.name == backstore_name(volume):
                so.delete()

    def _matches(self, target: Any, spec: ExportSpec) -> bool:
        try:
            tpg = next(iter(target.tpgs))
            acls = list(tpg.node_acls)
            luns = {lun.lun: lun.storage_object.udev_path for lun in tpg.luns}
            acl = acls[0] if len(acls) == 1 else None
            return (tpg.enable and acl is not None and acl.node_wwn == spec.initiator_iqn
                    and luns == {SAN_LUN: spec.path}
                    and (acl.chap_userid or None) == (spec.chap.user if spec.chap else None)
                    and (acl.chap_password or None) == (spec.chap.secret if spec.chap else None)
                    and (acl.chap_mutual_userid or None) == (spec.mutual.user if spec.mutual else None)
                    and (acl.chap_mutual_password or None)
                    == (spec.mutual.secret if spec.mutual else None))
        except (StopIteration, self.rtslib.utils.RTSLibError, OSError):
            return False

    def export(self, volume_name: str, path: str, initiator_iqn: str,
               chap: Optional[Chap], mutual: Optional[Chap] = None) -> Export:
        spec = ExportSpec(volume_name, path, initiator_iqn, chap, mutual)
        with self._lock:
            self._ensure(spec)
        return next(e for e in self.list() if e.volume == volume_name)

    def _ensure(self, spec: ExportSpec) -> None:
        t = self._targets().get(target_iqn(self.base, spec.volume))
        if t is not None and self._matches(t, spec):
            return
        if t is not None:
            self._delete(spec.volume, t)
        self._apply(plan_export(spec, self.base, self.portal))

    def unexport(self, volume_name: str) -> None:
        with self._lock:
            t = self._targets().get(target_iqn(self.base, volume_name))
            if t is None:
                raise NotExported(volume_name)
            self._delete(volume_name, t)

    def list(self) -> list[Export]:
        out = []
        for iqn, t in self._targets().items():
            tpg = next(iter(t.tpgs), None)
            acls = list(tpg.node_acls) if tpg else []
            luns = {lun.lun: lun.storage_object.udev_path for lun in tpg.luns} if tpg else {}
            out.append(Export(volume=volume_of_target(self.base, iqn) or "", target_iqn=iqn,
                              tid=TPG_TAG, portal=self.portal, path=luns.get(SAN_LUN),
                              initiators=tuple(a.node_wwn for a in acls),
                              chap_user=(acls[0].chap_userid or None) if acls else None,
                              mutual_user=(acls[0].chap_mutual_userid or None) if acls else None))
        return sorted(out, key=lambda e: e.volume)

    def rebuild(self, desired: list[ExportSpec]) -> list[Export]:
        with self._lock:
            want = {target_iqn(self.base, d.volume): d for d in desired}
            for iqn, t in self._targets().items():
                if iqn not in want:
                    self._delete(volume_of_target(self.base, iqn) or "", t)
            for d in desired:
                self._ensure(d)
        return self.list()

    def health(self) -> ExportHealth:
        try:
            n = len(self._targets())
        except (self.rtslib.utils.RTSLibError, OSError) as e:
            return ExportHealth(False, f"lio: {e}")
        return ExportHealth(True, f"lio: {n} targets", n)
