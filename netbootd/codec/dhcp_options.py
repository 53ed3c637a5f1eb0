"""DHCPv4 protocol constants, in one place, with where each comes from.

Pure data and tiny value helpers; no I/O.
"""
from __future__ import annotations

import socket
import struct

# RFC 2131 §2: ports
SERVER_PORT = 67
CLIENT_PORT = 68
# PXE 2.1 §2.2.2: boot server discovery / proxyDHCP REQUEST port
PXE_PORT = 4011

# RFC 2131 §3: op field
BOOTREQUEST = 1
BOOTREPLY = 2

# RFC 2131 §4.1: the BROADCAST bit of 'flags'
FLAG_BROADCAST = 0x8000

MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3 / RFC 2132 §2
FIXED_LEN = 236                       # op..file, RFC 2131 fig. 1
OPTIONS_START = FIXED_LEN + 4         # after the magic cookie

# RFC 2131 §2 / RFC 951: a BOOTP message is at least 300 bytes; some relays
# and old clients drop shorter ones, so replies are padded to this.
MIN_REPLY_LEN = 300
# RFC 2131 §2: every client must accept a 576-byte IP datagram, i.e. a DHCP
# message of 576 - 20 (IP) - 8 (UDP) = 548 bytes.
MIN_MAX_MESSAGE = 576
IP_UDP_OVERHEAD = 28
# We never build a reply bigger than one Ethernet frame's payload.
MAX_MESSAGE_CAP = 1500

# Message types, RFC 2132 §9.6 (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MSG_NAMES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK",
             6: "NAK", 7: "RELEASE", 8: "INFORM"}

# Option codes (RFC 2132 unless noted)
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN_NAME = 15
OPT_BROADCAST = 28
OPT_VENDOR_SPECIFIC = 43
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_REQUEST = 55
OPT_MESSAGE = 56
OPT_MAX_MESSAGE_SIZE = 57
OPT_RENEWAL_T1 = 58
OPT_REBINDING_T2 = 59
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_TFTP_SERVER = 66
OPT_BOOTFILE = 67
OPT_USER_CLASS = 77        # RFC 3004 (iPXE sends it raw, not length-prefixed)
OPT_RELAY_AGENT = 82       # RFC 3046
OPT_CLIENT_ARCH = 93       # RFC 4578 §2.1
OPT_CLIENT_NDI = 94        # RFC 4578 §2.2
OPT_CLIENT_UUID = 97       # RFC 4578 §2.3
OPT_DOMAIN_SEARCH = 119    # RFC 3397
OPT_IPXE_ENCAP = 175       # iPXE's encapsulated options (docs: ipxe.org/howto/dhcpd)
OPT_END = 255

# Option 52 values, RFC 2132 §9.3
OVERLOAD_FILE = 1
OVERLOAD_SNAME = 2

# RFC 3046 §2.2: relay agent information is the last option before END.
# Options we always place first / never drop when space is short.
ESSENTIAL = (OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_LEASE_TIME, OPT_SUBNET_MASK,
             OPT_RENEWAL_T1, OPT_REBINDING_T2, OPT_VENDOR_CLASS)


def ip_bytes(addr: str) -> bytes:
    return socket.inet_aton(addr)


def ip_list(addrs) -> bytes:
    return b"".join(socket.inet_aton(a) for a in addrs)


def u32(v: int) -> bytes:
    return struct.pack("!I", v & 0xFFFFFFFF)


def u16(v: int) -> bytes:
    return struct.pack("!H", v & 0xFFFF)
