"""A packed tool: a dynamically linked Debian binary carried with its ELF interpreter and
its libraries, for the agent.

curl (iso_builder/tlsclient.py: the boot media's TLS client) and openssl
(iso_builder/hashtool.py: the agent tool pack, and the media's hasher) are each one
PackedTool; kexec (iso_builder/kexec.py) does the packing for all of them: the ldd
closure, and the `apt-get download` of the package and the libraries it lacks.

Where a tool's binary comes from, first found wins: $<env_var> (a path, or "none"), an
installed copy (`system`), our cache (<cache>/<name>/root/<bin_path>), or - only with
fetch=True (the install step, `netbootd initrd build`; never a running daemon) - the
Debian package <name> and the library packages it lacks, unpacked into the cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import cpio
from . import kexec as packer


@dataclass(frozen=True)
class PackedTool:
    name: str                      # the Debian package, the cache folder, in messages
    env_var: str                   # NETBOOTD_CURL: a path, or "none"
    system: tuple[Path, ...]       # installed copies, in the order looked at
    bin_path: str                  # in the archive, and in the unpacked package
    error: type[RuntimeError]      # what find/files raise (tlsclient.TlsClientError, ...)

    def cache_root(self, cache: Path) -> Path:
        return cache / self.name / "root"

    def find(self, cache: Path, fetch: bool = False) -> Path | None:
        """The binary to pack, or None (none named, installed or cached, and no fetch)."""
        root = self.cache_root(cache)
        try:
            return packer.find_binary(
                self.env_var, (*self.system, root / self.bin_path),
                (lambda: packer.fetch_binary(self.name, self.bin_path, root)) if fetch else None)
        except packer.KexecError as e:
            raise self.error(str(e)) from None

    def files(self, binary: Path) -> list[tuple[str, bytes, int]]:
        """(path in the archive, bytes, mode): the binary, its interpreter and libraries."""
        try:
            return packer.files_for_initrd(binary, self.bin_path)
        except packer.KexecError as e:
            raise self.error(str(e).replace("kexec", self.name)) from None

    def pick(self, cache: Path, fetch: bool = False) -> tuple[Path | None, str | None]:
        """(binary to pack, None), (None, None) when there is none, (None, why) when
        the one found cannot be packed."""
        try:
            binary = self.find(cache, fetch)
            if binary is not None:
                self.files(binary)
            return binary, None
        except (OSError, self.error) as e:
            return None, str(e)

    def add_to(self, archive: cpio.Archive, binary: Path) -> int:
        """Add the binary and what it needs to `archive`, but for the paths the archive
        has already (a library another tool brought: packed once); the bytes added."""
        added = 0
        for path, data, mode in self.files(binary):
            if path not in archive:
                archive.add_file(path, data, mode)     # parents are added implicitly
                added += len(data)
        return added
