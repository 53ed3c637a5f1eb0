"""/api/v1/networks: networks as objects (issue 14).  Reads are open like the
other overviews; every change takes the admin token.  The logic is
net/networks.py's (checked whole, stored, applied live); this module only
speaks HTTP: a template error is a 400 naming the line and the key, a
conflict with another network or leases in use a 409, an unknown name a 404."""
from __future__ import annotations

from ...policy.vnet import VnetConflict, VnetError, VnetLease, from_doc, from_template
from ...policy.vnet_template import MAX_TEMPLATE
from ..networks import InUse, Unknown
from . import validate as val
from .common import read_json
from .errors import BadRequest, Conflict, NotFound, Unavailable


def _error(e: VnetError):
    if isinstance(e, Unknown):
        return NotFound(str(e))
    if isinstance(e, (VnetConflict, InUse)):
        return Conflict(str(e))
    return BadRequest(str(e))


def _fields(body: dict, allowed: set, what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a field of {what}")


def _definition(body: dict):
    """{"template": text} (TOML or OpenNebula syntax) or the fields as a JSON object."""
    if "template" in body:
        _fields(body, {"template"}, "a network template body")
        text = body["template"]
        if not isinstance(text, str) or len(text) > MAX_TEMPLATE:
            raise BadRequest("template: a string (TOML or an OpenNebula template)")
        return from_template(text)
    if not body:
        raise BadRequest("empty body: give {\"template\": text} or the network's fields")
    if "origin" in body:
        raise BadRequest("origin: set by the daemon")
    return from_doc(body, "api")


def _force(request) -> bool:
    raw = (request.args or {}).get(b"force", [b""])[0].lower()
    if raw not in (b"", b"0", b"1", b"true", b"false", b"yes", b"no"):
        raise BadRequest("force: true or false")
    return raw in (b"1", b"true", b"yes")


class NetworksApi:
    def __init__(self, networks, pools):
        self.networks = networks          # () -> net/networks.Networks | None
        self.pools = pools                # () -> pool rows (every served network)

    def _n(self):
        n = self.networks()
        if n is None or n.core.plan is None:
            raise Unavailable("networks are not loaded yet")
        return n

    def list(self, request):
        """Every served network (the pool rows) with the stored network's id,
        type, origin and VLAN; a zero-config interface network has no id."""
        n = self.networks()
        rows = {r["name"]: r for r in (n.rows() if n is not None and n.core.plan else [])}
        out = []
        for p in self.pools():
            r = rows.get(p["name"], {})
            out.append({**p, "id": r.get("id"), "origin": r.get("origin", "interface"),
                        "vlan": r.get("vlan"), "total": p["size"]})
        return out

    def get(self, request, name):
        try:
            return self._n().show(name)
        except VnetError as e:
            raise _error(e) from None

    def create(self, request):
        n = self._n()
        try:
            v = _definition(read_json(request))
            return n.create(v).addErrback(_refused)
        except VnetError as e:
            raise _error(e) from None

    def update(self, request, name):
        n = self._n()
        try:
            v = _definition(read_json(request))
            return n.update(name, v).addErrback(_refused)
        except VnetError as e:
            raise _error(e) from None

    def delete(self, request, name):
        n = self._n()
        d = n.delete(name, _force(request)).addErrback(_refused)
        return d.addCallback(lambda _: {"deleted": name})

    def add_leases(self, request, name):
        body = read_json(request)
        _fields(body, {"leases"}, "a lease list")
        items = body.get("leases")
        if not isinstance(items, list) or not items or len(items) > 512:
            raise BadRequest("leases: a list of 1-512 {ip, mac?, hostname?} (more: call again)")
        leases = []
        for i, x in enumerate(items):
            if not isinstance(x, dict):
                raise BadRequest(f"leases[{i}]: an object {{ip, mac?, hostname?}}")
            _fields(x, {"ip", "mac", "hostname"}, f"leases[{i}]")
            ip = x.get("ip")
            if not isinstance(ip, str) or val.ipv4(ip, f"leases[{i}].ip") is None:
                raise BadRequest(f"leases[{i}].ip: required")
            mac = val.mac(x["mac"], f"leases[{i}].mac") if x.get("mac") is not None else None
            leases.append(VnetLease(ip, mac, val.hostname(x.get("hostname"),
                                                          f"leases[{i}].hostname")))
        return self._n().add_leases(name, leases).addErrback(_refused)

    def remove_leases(self, request, name):
        body = read_json(request)
        _fields(body, {"ips", "force"}, "a lease removal")
        ips = body.get("ips")
        if not isinstance(ips, list) or not ips or len(ips) > 256:
            raise BadRequest("ips: a list of 1-256 addresses (more: call again)")
        ips = [val.ipv4(ip if isinstance(ip, str) else "-", f"ips[{i}]")
               for i, ip in enumerate(ips)]
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise BadRequest("force: true or false")
        return self._n().remove_leases(name, ips, force).addErrback(_refused)


def _refused(failure):
    """A change refused inside the lock (its checks run when its turn comes)."""
    failure.trap(VnetError)
    raise _error(failure.value)
