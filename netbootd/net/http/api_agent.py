"""/api/v1/agent/*: the discover initrd's calls (docs/agent-protocol.md).

`register` needs no credential (a host that boots has none yet); it is
limited per source for new hosts, and a token, when sent, is checked before
anything else.  Every other call carries the host's own secret
(`Authorization: Agent <secret>`), so a host acts only for itself.  The
logic is registry/agent.py's; this module only speaks HTTP."""
from __future__ import annotations

import re

from ...policy.identity import normalize_ids
from ...registry.agent import Refused
from . import validate as v
from .common import client_ip, local_base, read_json
from .errors import BadRequest, Refusal

TOKEN_MAX = 512


def agent_secret(request) -> str | None:
    """The credential of `Authorization: Agent <secret>` (scheme case-insensitive)."""
    hdr = request.requestHeaders.getRawHeaders(b"authorization")
    scheme, _, cred = (hdr[0] if hdr else b"").strip().partition(b" ")
    if scheme.lower() != b"agent":
        return None
    try:
        return cred.strip().decode("ascii") or None
    except UnicodeDecodeError:
        return None


_UUID_RE = re.compile(v.UUID_PATTERN)
_TEXT_RE = re.compile(v.TEXT_PATTERN)


def _ids(raw) -> dict | None:
    """The register call's `ids`, checked as the OpenAPI document says, then
    normalized (policy/identity.py: placeholders dropped)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequest("ids: must be an object")
    unknown = sorted(set(raw) - {"macs", "uuid", "serial", "board_serial"})
    if unknown:
        raise BadRequest(f"ids.{unknown[0]}: not an identifier this server knows")
    u = raw.get("uuid")
    if u is not None and not (isinstance(u, str) and _UUID_RE.match(u)):
        raise BadRequest("ids.uuid: not a UUID")
    for key in ("serial", "board_serial"):
        t = raw.get(key)
        if t is not None and not (isinstance(t, str) and len(t) <= 128 and _TEXT_RE.match(t)):
            raise BadRequest(f"ids.{key}: at most 128 characters of printable text")
    try:
        return normalize_ids(raw)
    except ValueError as e:
        raise BadRequest(str(e)) from None


class AgentApi:
    def __init__(self, agents, clock, counters, committed, submit, leases, http_base=None):
        self.agents, self.clock, self.counters = agents, clock, counters
        self.committed, self.submit, self.leases = committed, submit, leases
        self.http_base = http_base

    def _refused(self, e: Refused) -> Refusal:
        """Store the refusal's event (if any) and answer with its status;
        the reply does not wait for the event."""
        if e.writes:
            self.submit(e.writes)
        self.counters[f"api.agent_refused_{e.status}"] += 1
        return Refusal(e.status, e.reason)

    def _leased(self, macs: list) -> dict:
        """{mac: address} of the active leases this daemon gave those MACs."""
        from ...model import int2ip
        return {m: int2ip(lease.address) for m, lease in self.leases(macs).items()}

    def register(self, request):
        """POST {mac, ip, uuid, token, ids}.  (A GET form once existed for older
        agents; a state change behind a GET is one a web page can trigger.)"""
        body = read_json(request)
        unknown = sorted(set(body) - {"mac", "ip", "uuid", "token", "ids"})
        if unknown:
            raise BadRequest(f"{unknown[0]}: not a field of a registration")
        # null is "not known" (a guest without an SMBIOS UUID), as absent
        bad = [k for k in ("mac", "ip", "uuid", "token") if body.get(k) is not None
               and not isinstance(body[k], str)]
        if bad:
            raise BadRequest(f"{bad[0]}: must be a string")

        mac = v.mac(body.get("mac") or "")
        ip = v.ipv4(body.get("ip") or client_ip(request))
        uuid = v.uuid(body.get("uuid"))
        token = body.get("token")
        if token is not None and len(token) > TOKEN_MAX:
            raise BadRequest(f"token: longer than {TOKEN_MAX} characters")
        ids = _ids(body.get("ids"))
        try:
            reply, writes = self.agents.register(mac, ip, uuid, token, ids, client_ip(request),
                                                 self.clock.seconds(), self._leased)
        except Refused as e:
            raise self._refused(e) from None
        self.counters["api.agent_register"] += 1
        return self.committed(writes, reply)

    def _host(self, request):
        try:
            return self.agents.authenticate(agent_secret(request))
        except Refused as e:
            self.counters["api.agent_unauthenticated"] += 1
            raise Refusal(e.status, e.reason) from None

    def inventory(self, request):
        h = self._host(request)
        body = read_json(request)
        try:
            reply, writes = self.agents.inventory(h, body, self.clock.seconds())
        except Refused as e:
            raise self._refused(e) from None
        self.counters["api.agent_inventory"] += 1
        return self.committed(writes, reply)

    def next(self, request):
        h = self._host(request)
        base = local_base(request, self.http_base)
        reply, writes = self.agents.next(h, self.clock.seconds(), base)
        self.counters["api.agent_next"] += 1
        if writes:
            return self.committed(writes, reply)
        return reply

    def report(self, request):
        h = self._host(request)
        try:
            reply, writes = self.agents.report(h, read_json(request), self.clock.seconds())
        except Refused as e:
            raise self._refused(e) from None
        self.counters["api.agent_report"] += 1
        return self.committed(writes, reply)
