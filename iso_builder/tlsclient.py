"""The agent's TLS client: Debian's curl with its shared libraries, for boot media.

busybox's wget (ssl_client) verifies no certificate, so an agent that talks
HTTPS with it would hand its enrollment token to anyone in the path.  curl
checks the server's public key against the medium's pin (``--pinnedpubkey
sha256//...``) during the handshake, before it sends a byte of the request.

Packed like kexec (iso_builder/kexec.py): /usr/bin/curl, its libraries in
/usr/lib/netbootd/ (LD_LIBRARY_PATH, lib.sh: NB_LIBS), its ELF interpreter.
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

from . import kexec as packer

SYSTEM_CURL = (Path("/usr/bin/curl"),)
BIN_PATH = "usr/bin/curl"


class TlsClientError(RuntimeError):
    pass


def cache_root(cache: Path) -> Path:
    return cache / "curl" / "root"


def find_curl(cache: Path, fetch: bool = False) -> Path | None:
    """The curl binary to pack, or None (no TLS client: the agent refuses https)."""
    try:
        return packer.find_binary(
            "NETBOOTD_CURL", (*SYSTEM_CURL, cache_root(cache) / BIN_PATH),
            (lambda: packer.fetch_binary("curl", BIN_PATH, cache_root(cache))) if fetch else None)
    except packer.KexecError as e:
        raise TlsClientError(str(e)) from None


def files_for_initrd(binary: Path) -> list[tuple[str, bytes, int]]:
    """(path in the archive, bytes, mode): curl, its interpreter and libraries."""
    try:
        return packer.files_for_initrd(binary, BIN_PATH)
    except packer.KexecError as e:
        raise TlsClientError(str(e).replace("kexec", "curl")) from None


def pick(cache: Path, fetch: bool = False) -> tuple[Path | None, str | None]:
    """(curl to pack, None), (None, None) when there is none, (None, why) when
    the one found cannot be packed."""
    try:
        binary = find_curl(cache, fetch)
        if binary is not None:
            files_for_initrd(binary)
        return binary, None
    except (OSError, TlsClientError) as e:
        return None, str(e)
