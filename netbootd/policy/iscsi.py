"""iSCSI names and CHAP credentials (issue 13 item 2): the stable IQN scheme,
validation of names and secrets, secret generation.  Pure: no I/O beyond the
`secrets` module's random bytes.

The scheme, from one configured base (``iqn.2026-12.lan.netboot``):

* a volume's target:       ``<base>:vol.<volume>`` (``_`` in a volume name
  becomes ``.``: iSCSI names have no underscore and volume names no dot, so the
  mapping is reversible);
* a host's initiator:      ``<base>:host.<mac as 12 hex digits>``;
* a host's CHAP user name: ``host-<mac as 12 hex digits>`` (one per host, shared
  by that host's exports: tgt's accounts are global, a user has one secret).

RFC 3720 section 3.2.6: iSCSI names are at most 223 bytes; the ``iqn.`` form is
``iqn.yyyy-mm.<reversed domain>[:<anything>]`` over lower-case ASCII letters,
digits, ``-``, ``.`` and ``:`` (RFC 3722's stringprep folds case; we accept only
the folded form so two spellings never name one target).  ``eui.`` + 16 upper-
case hex digits is the other form initiators use.

CHAP (RFC 3720 section 8.2.1): without IPsec a secret needs at least 96 random
bits; Microsoft's initiator accepts 12 to 16 characters.  A generated secret is
16 characters of the URL-safe base64 alphabet: exactly 96 random bits, and safe
in an iPXE script, a tgtadm argument and a libiscsi URL (no %, @, / or :).
"""
from __future__ import annotations

import base64
import re
import secrets as _secrets
from dataclasses import dataclass

from ..model import normalize_mac

MAX_IQN = 223                       # RFC 3720 section 3.2.6.1
SECRET_MIN, SECRET_MAX = 12, 16     # RFC 3720 8.2.1 (96 bits) / Microsoft initiator limits
GENERATED_SECRET_LEN = 16           # 12 random bytes -> 16 base64url characters = 96 bits
MAX_CHAP_USER = 128

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_BASE_RE = re.compile(rf"^iqn\.(\d{{4}})-(0[1-9]|1[0-2])\.{_LABEL}(?:\.{_LABEL})*$")
_IQN_RE = re.compile(rf"^iqn\.\d{{4}}-(?:0[1-9]|1[0-2])\.{_LABEL}(?:\.{_LABEL})*(?::[a-z0-9.:-]*)?$")
_EUI_RE = re.compile(r"^eui\.[0-9A-F]{16}$")
_VOLUME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CHAP_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_~+=.-]+$")


class IscsiNameError(ValueError):
    """A bad iSCSI name, volume name or CHAP value; the message names the field."""


@dataclass(frozen=True)
class Chap:
    """One CHAP credential: the user name the initiator (or, mutual, the target)
    sends and its secret.  repr never shows the secret."""
    user: str
    secret: str

    def __post_init__(self) -> None:
        validate_chap_user(self.user)
        validate_secret(self.secret)

    def __repr__(self) -> str:
        return f"Chap(user={self.user!r}, secret=<{len(self.secret)} chars>)"


def validate_base(base: str, field: str = "iqn_base") -> str:
    """The configured base: ``iqn.yyyy-mm.reversed.domain`` (lower case, no ':')."""
    if not isinstance(base, str) or not _BASE_RE.fullmatch(base):
        raise IscsiNameError(f"{field}: {base!r} is not of the form iqn.yyyy-mm.reversed.domain "
                             "(lower-case letters, digits, '-' and '.')")
    # room for ':vol.' + the longest volume name
    if len(base) + len(":vol.") + 63 > MAX_IQN:
        raise IscsiNameError(f"{field}: {len(base)} characters is too long "
                             f"(an IQN is at most {MAX_IQN} bytes)")
    return base


def validate_iqn(name: str, field: str = "iqn") -> str:
    """An initiator or target name in the ``iqn.`` or ``eui.`` form; returned as is."""
    if not isinstance(name, str) or not name:
        raise IscsiNameError(f"{field}: empty")
    if len(name.encode()) > MAX_IQN:
        raise IscsiNameError(f"{field}: {len(name.encode())} bytes (at most {MAX_IQN})")
    if _EUI_RE.fullmatch(name) or _IQN_RE.fullmatch(name):
        return name
    raise IscsiNameError(f"{field}: {name!r} is not an iSCSI name (iqn.yyyy-mm.domain[:id] in "
                         "lower case, or eui. + 16 upper-case hex digits)")


def validate_volume_name(name: str, field: str = "volume") -> str:
    if not isinstance(name, str) or not _VOLUME_RE.fullmatch(name):
        raise IscsiNameError(f"{field}: {name!r} is not a volume name "
                             "(1-63 of a-z 0-9 _ -, starting with a letter or digit)")
    return name


def validate_chap_user(user: str, field: str = "chap user") -> str:
    if not isinstance(user, str) or not 0 < len(user) <= MAX_CHAP_USER \
            or not _CHAP_USER_RE.fullmatch(user):
        raise IscsiNameError(f"{field}: {user!r} is not a CHAP user name (1-{MAX_CHAP_USER} of "
                             "A-Z a-z 0-9 . _ : -, starting with a letter or digit)")
    return user


def validate_secret(secret: str, field: str = "chap secret") -> str:
    """Length 12-16 (RFC 3720 / Microsoft), characters safe everywhere it travels.
    The message never repeats the secret."""
    if not isinstance(secret, str):
        raise IscsiNameError(f"{field}: not a string")
    if not SECRET_MIN <= len(secret) <= SECRET_MAX:
        raise IscsiNameError(f"{field}: {len(secret)} characters "
                             f"(CHAP secrets are {SECRET_MIN}-{SECRET_MAX})")
    if not _SECRET_RE.fullmatch(secret):
        raise IscsiNameError(f"{field}: only A-Z a-z 0-9 and _ ~ + = . - are allowed")
    return secret


def generate_secret() -> str:
    """A fresh CHAP secret: 96 random bits as 16 URL-safe base64 characters."""
    return base64.urlsafe_b64encode(_secrets.token_bytes(12)).decode()


def _mac_hex(mac: str) -> str:
    try:
        return normalize_mac(mac).replace(":", "")
    except ValueError as e:
        raise IscsiNameError(f"mac: {e}") from None


def target_iqn(base: str, volume: str) -> str:
    """``<base>:vol.<volume>`` with ``_`` -> ``.``."""
    validate_base(base)
    validate_volume_name(volume)
    return f"{base}:vol.{volume.replace('_', '.')}"


def volume_of_target(base: str, iqn: str) -> str | None:
    """The volume a target IQN of this scheme names, or None for any other name."""
    prefix = f"{base}:vol."
    if not iqn.startswith(prefix):
        return None
    vol = iqn[len(prefix):].replace(".", "_")
    return vol if _VOLUME_RE.fullmatch(vol) else None


def host_iqn(base: str, mac: str) -> str:
    """``<base>:host.<12 hex digits>``: each host its own initiator name."""
    validate_base(base)
    return f"{base}:host.{_mac_hex(mac)}"


def host_chap_user(mac: str) -> str:
    return f"host-{_mac_hex(mac)}"


def check_pair(chap: Chap | None, mutual: Chap | None) -> None:
    """Mutual CHAP needs initiator CHAP, and the two directions must differ
    (RFC 3720 8.2.1: a secret is not shared between an initiator and a target)."""
    if mutual is None:
        return
    if chap is None:
        raise IscsiNameError("mutual chap: needs an initiator chap credential too")
    if mutual.user == chap.user:
        raise IscsiNameError(f"mutual chap user: {mutual.user!r} is also the initiator's user")
    if mutual.secret == chap.secret:
        raise IscsiNameError("mutual chap secret: equals the initiator's secret")
