"""Value types shared by policy, store and protocols.  No I/O here."""
from __future__ import annotations

import enum
import re
import socket
from dataclasses import dataclass, field

# IANA "Processor Architecture Types" registry (RFC 4578 §2.1, RFC 5970),
# option 93.  Every registered value is known by name; others are reported
# as "unknown-<n>" and turned into an event, never a crash.
ARCH_NAMES: dict[int, str] = {
    0: "x86-bios",
    1: "nec-pc98",
    2: "ia64-efi",
    3: "dec-alpha",
    4: "arc-x86",
    5: "intel-lean-client",
    6: "x86-uefi",
    7: "x64-uefi",
    8: "xscale-efi",
    9: "ebc",            # sent by many x64 UEFI firmwares too
    10: "arm32-uefi",
    11: "arm64-uefi",
    12: "ppc-openfirmware",
    13: "ppc-epapr",
    14: "power-opal-v3",
    15: "x86-uefi-http",
    16: "x64-uefi-http",
    17: "ebc-http",
    18: "arm32-uefi-http",
    19: "arm64-uefi-http",
    20: "x86-bios-http",
    21: "arm32-uboot",
    22: "arm64-uboot",
    23: "arm32-uboot-http",
    24: "arm64-uboot-http",
    25: "riscv32-uefi",
    26: "riscv32-uefi-http",
    27: "riscv64-uefi",
    28: "riscv64-uefi-http",
    29: "riscv128-uefi",
    30: "riscv128-uefi-http",
    31: "s390-basic",
    32: "s390-extended",
    33: "mips32-uefi",
    34: "mips64-uefi",
    35: "sunway32-uefi",
    36: "sunway64-uefi",
    37: "loongarch32-uefi",
    38: "loongarch32-uefi-http",
    39: "loongarch64-uefi",
    40: "loongarch64-uefi-http",
    41: "arm-rpiboot",
}

# Arch types whose firmware fetches the boot file over HTTP (UEFI HTTP Boot).
HTTP_ARCHES = frozenset({15, 16, 17, 18, 19, 20, 23, 24, 26, 28, 30, 38, 40})


def arch_name(arch: int | None) -> str:
    if arch is None:
        return "none"
    return ARCH_NAMES.get(arch, f"unknown-{arch}")


def ip2int(ip: str) -> int:
    """Dotted IPv4 -> int, strictly (inet_pton: no short forms)."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except (OSError, TypeError):
        raise ValueError(f"not an IPv4 address: {ip!r}") from None


def int2ip(n: int) -> str:
    """int -> dotted IPv4 (hot path: events format one per exchange)."""
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"not an IPv4 address: {n!r}")
    return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def normalize_mac(text: str) -> str:
    """'52-54-00-AA-BB-CC' / '525400aabbcc' / '52:54:00:aa:bb:cc' -> canonical
    lower-case colon form.  Raises ValueError naming the bad input."""
    t = text.strip().lower()
    if not _MAC_RE.match(t):
        raise ValueError(f"not a MAC address: {text!r}")
    h = t.replace(":", "").replace("-", "")
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))


class HostState(str, enum.Enum):
    DISCOVERED = "discovered"   # seen on the wire, nothing known yet
    REGISTERED = "registered"   # the agent called back / admin approved
    PENDING = "pending"         # enrolled into an account that approves by hand
    IDLE = "idle"               # an idle resource awaiting assignment
    ASSIGNED = "assigned"
    BOOTING = "booting"
    ACTIVE = "active"
    ERROR = "error"
    RETIRED = "retired"


# Hosts in these states are "known": their addresses are protected from the
# share of a pool that unknown (merely discovered) clients may take.
KNOWN_STATES = frozenset({HostState.REGISTERED, HostState.IDLE, HostState.ASSIGNED,
                          HostState.BOOTING, HostState.ACTIVE})


@dataclass
class Host:
    mac: str
    state: HostState = HostState.DISCOVERED
    arch: int | None = None
    vendor_class: str | None = None
    uuid: str | None = None
    hostname: str | None = None
    interface: str | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    ip: str | None = None
    profile: str | None = None          # boot profile assigned by an admin (None: default)
    profile_args: dict = field(default_factory=dict)
    account: str | None = None          # Account.id (at most one account per host)
    # Every identifier the host reported, [kind, value] (policy/identity.py):
    # its NIC MACs, SMBIOS UUID, serials.  A returning host is matched by them.
    ids: list = field(default_factory=list)
    secret_hash: str | None = None      # sha256 of its agent secret (auth/enroll.py)
    # The address its current secret was issued to ("any" after an admin's
    # reset: the next registration may come from anywhere).  Only accepted
    # registrations set it: never a boot script, DHCP or a request body.
    agent_addr: str | None = None
    action: dict | None = None          # what its agent is told next (id, action, ...)
    hw: dict | None = None              # the latest inventory's summary (policy/inventory.py)


APPROVALS = ("auto", "manual")


@dataclass
class Account:
    """Hosts that booted an account's token (or media) join it (issue 11)."""
    id: str
    name: str
    approval: str = "auto"              # auto: idle at once; manual: pending until approved
    profile: str | None = None          # default boot profile of its hosts
    profile_args: dict = field(default_factory=dict)
    created: float = 0.0


@dataclass
class Token:
    """An enrollment token: only its hash is stored; the text is shown once."""
    id: str
    account: str                        # Account.id
    hash: str
    label: str | None = None
    created: float = 0.0
    expires: int | None = None          # Unix time; None: until revoked
    max_uses: int | None = None         # None: unlimited
    uses: int = 0
    revoked: float | None = None


class LeaseState(str, enum.Enum):
    OFFERED = "offered"     # in memory only, never stored (RFC 2131 lets us forget it)
    ACTIVE = "active"
    RELEASED = "released"
    DECLINED = "declined"   # on probation until `ends`
    EXPIRED = "expired"


@dataclass
class Lease:
    address: int                  # IPv4 as int
    network: str
    client_key: bytes             # option 61 if sent, else htype+chaddr
    mac: str
    state: LeaseState
    starts: float
    ends: float
    hostname: str | None = None
    # Where this lease's write stands in the group commit (the sequence
    # number GroupCommitter.submit returned for it, net/dhcp.py): -1 when
    # read from the store, None when bound and not yet handed over.
    # Memory only: never stored, not compared.
    seq: int | None = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True)
class Reservation:
    mac: str
    address: int
    hostname: str | None = None
