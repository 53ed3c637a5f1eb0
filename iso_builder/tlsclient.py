"""The agent's TLS client: Debian's curl with its shared libraries, for boot media.

busybox's wget (ssl_client) verifies no certificate, so an agent that talks
HTTPS with it would hand its enrollment token to anyone in the path.  curl
checks the server's public key against the medium's pin (``--pinnedpubkey
sha256//...``) during the handshake, before it sends a byte of the request.

A PackedTool (iso_builder/toolpack.py), packed like kexec (iso_builder/kexec.py):
/usr/bin/curl, its libraries in /usr/lib/netbootd/ (LD_LIBRARY_PATH, lib.sh: NB_LIBS),
its ELF interpreter.
Debian 12's curl links 30 libraries (OpenSSL, GnuTLS through librtmp, Kerberos,
LDAP...): about 18 MiB unpacked, ~7 MiB gzip'ed.  That is why only the boot
media's initrd (iso_builder/media.py) carries it; the PXE discover initrd, which
crosses TFTP/HTTP on every boot, does not (its agent refuses https:// unless
netbootd.insecure=1, see docs/agent-protocol.md).

Where the binary comes from, first found wins: $NETBOOTD_CURL (a path, or
"none"), an installed curl (/usr/bin/curl), our cache (<cache>/curl/root), or
- only with fetch=True (the install step, `netbootd initrd build`) - `apt-get
download curl` and the library packages it lacks, unpacked into the cache.
"""
from __future__ import annotations

from pathlib import Path

from .toolpack import PackedTool

SYSTEM_CURL = (Path("/usr/bin/curl"),)
BIN_PATH = "usr/bin/curl"


class TlsClientError(RuntimeError):
    pass


CURL = PackedTool("curl", "NETBOOTD_CURL", SYSTEM_CURL, BIN_PATH, TlsClientError)

files_for_initrd = CURL.files          # curl, its interpreter and libraries
pick = CURL.pick                       # (curl, None), (None, None) or (None, why not)
