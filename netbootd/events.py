"""The catalog of event kinds: every kind netbootd emits, in one place.

An event is a row of a host's timeline (and the API's /events, the hooks,
the metrics).  Its kind used to be a bare string spelled in eight files, the
status page's JavaScript included; now each kind is declared here once, with
what it means for its readers:

* ``failure``: a boot step that went wrong ("why didn't my host boot?"):
  the status page marks it, web.is_failure() and status.js use this flag (the
  page fetches the catalog from GET /api/v1/events/kinds).  An ``http.*``
  event with a status >= 400 is a failure too, whatever its kind says.
* ``reportable``: sent by the hooks (webhook, mail) unless the config lists
  other kinds: HooksConfig's default ``kinds``.
* ``shown``: appears in a host's timeline on the status page (the event has
  the host's MAC); the others are about the daemon, not a host.

Emitting a kind that is not here is a bug: tests/unit/test_writes.py walks
every emit site of the package and checks its kind against this catalog.
Pure: stdlib only (policy imports it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    doc: str
    failure: bool = False
    reportable: bool = False
    shown: bool = True


CATALOG: dict[str, Kind] = {k.name: k for k in (
    # DHCP (policy/dhcp_engine.py, net/dhcp.py)
    Kind("dhcp.offer", "an address offered (full mode); opens a boot in the metrics"),
    Kind("dhcp.ack", "a lease granted or renewed"),
    Kind("dhcp.nak", "a REQUEST refused (wrong address or network)", failure=True,
         reportable=True),
    Kind("dhcp.release", "the client gave its lease back"),
    Kind("dhcp.decline", "the client found its address in use (RFC 2131 §4.4.1)"),
    Kind("dhcp.conflict", "a ping answered for an address about to be offered", shown=False),
    Kind("pool.exhausted", "no free address in the client's network", failure=True,
         reportable=True),
    Kind("dhcp.no_network", "a request on an interface (or from a relay) that serves no "
         "network: not answered (at most one per interface per 10 s)", failure=True,
         reportable=True, shown=False),
    # Networks as objects (net/services/networks.py, net/http/api_networks.py)
    Kind("network.created", "an admin created a network", shown=False),
    Kind("network.changed", "an admin changed a network (or its leases)", shown=False),
    Kind("network.deleted", "an admin deleted a network", shown=False),
    Kind("boot.unsupported", "a client architecture with no boot file", failure=True,
         reportable=True),
    Kind("proxy.offer", "proxyDHCP offer of a boot file (port 67 or 4011)"),
    Kind("proxy.ack", "proxyDHCP ACK of a boot file (port 4011)"),
    # TFTP (net/tftp.py: "tftp." + the transfer's outcome)
    Kind("tftp.finished", "a file sent completely (final_ack false: the last block went "
         "out but its ACK never came, RFC 1350's lost last ACK; the client left)"),
    Kind("tftp.failed", "a transfer that stopped (timeout, client error)", failure=True,
         reportable=True),
    Kind("tftp.aborted", "the client answered our OACK with an ERROR: a size probe (EDK2 "
         "asks tsize, then aborts, on every UEFI boot), not a failure"),
    Kind("tftp.refused", "a request refused (missing file, bad option)", failure=True),
    Kind("tftp.stopped", "a transfer cut short because the daemon stopped"),
    # HTTP (net/http/, registry/hosts.py)
    Kind("http.script", "an iPXE boot script served"),
    Kind("http.file", "a file download ended (a failure when its status is >= 400)",
         reportable=True),
    # The agent and the host lifecycle (registry/hosts.py)
    Kind("agent.register", "the agent in the initrd (or a booted OS) called back"),
    Kind("host.discovered", "a MAC became a host", reportable=True),
    Kind("host.state", "a host's state changed"),
    Kind("host.assign", "an admin assigned a boot profile"),
    Kind("host.hostname", "an admin renamed a host"),
    Kind("host.deleted", "an admin deleted a host"),
    # Accounts, tokens, the agent (registry/accounts.py, registry/agent.py).  Tokens
    # appear by id only, never their text.
    Kind("account.created", "an admin created an account", shown=False),
    Kind("account.changed", "an admin changed an account's approval or profile", shown=False),
    Kind("account.deleted", "an admin deleted an account (and its tokens)", shown=False),
    Kind("token.created", "an admin created an enrollment token (its id)", shown=False),
    Kind("token.revoked", "an admin revoked an enrollment token", shown=False,
         reportable=True),
    Kind("agent.refused", "an agent call refused (bad, unknown, expired, revoked or used-up "
         "token; a re-registration from an unknown address)", failure=True, reportable=True),
    Kind("host.conflict", "a token of one account tried to take a host of another",
         failure=True, reportable=True),
    Kind("host.account", "a host joined or moved between accounts"),
    Kind("host.merged", "another NIC's MAC of this host folded into it"),
    Kind("host.credential_reset", "an admin reset the host's agent credential"),
    Kind("host.identity_conflict", "a host reported identifiers another host owns (they "
         "stay that host's)", failure=True, reportable=True),
    Kind("agent.inventory", "the agent posted the host's hardware inventory"),
    Kind("agent.queued", "an admin queued an action for the host's agent"),
    Kind("agent.action", "the agent was sent an action or reported on one"),
    Kind("agent.action_failed", "an action the agent reported as failed (a wipe that did "
         "not verify)", failure=True, reportable=True),
    # Storage (net/storage.py): a host's timeline says which volume it boots
    Kind("storage.exported", "a volume was exported to this host and assigned as its "
         "sanboot disk (its IQN; CHAP on or off, never the secret)"),
    Kind("storage.unexported", "the host's volume export was removed"),
    Kind("storage.chap_rotated", "the host's CHAP secret was replaced"),
    Kind("storage.volume", "a volume was created, resized, snapshotted, cloned or deleted",
         shown=False),
    Kind("storage.failed", "a storage operation failed (its reason)", failure=True,
         reportable=True, shown=False),
    Kind("storage.capture", "a disk capture of this host into a volume: queued, progress "
         "every 10%, done (sha256, MB/s) or failed (its reason)"),
    # The store (net/commit.py)
    Kind("store.write_dropped", "a write the store could not hold was dropped", shown=False),
    # Interfaces followed through netlink (net/netlink.py, net/services/netlink.py)
    Kind("iface.up", "a served interface appeared (or got its IPv4 address): sockets opened",
         shown=False),
    Kind("iface.down", "a served interface went away (or lost its address): sockets closed",
         reportable=True, shown=False),
    Kind("iface.changed", "a served interface's address changed: sockets moved", shown=False),
    # IPv6 router-advertisement quench (net/ra.py)
    Kind("ra.router_seen", "an IPv6 router answers on a served link: no RA quench there",
         reportable=True, shown=False),
)}
KINDS = frozenset(CATALOG)
FAILURE_KINDS = frozenset(k for k, v in CATALOG.items() if v.failure)
REPORTABLE_KINDS = tuple(k for k, v in CATALOG.items() if v.reportable)


def catalog_json() -> list[dict]:
    """The catalog as the API serves it (status page)."""
    return [{"kind": k.name, "doc": k.doc, "failure": k.failure, "reportable": k.reportable,
             "shown": k.shown} for k in CATALOG.values()]
