"""Enrollment tokens and per-host agent secrets (issue 11; docs/agent-protocol.md).

An enrollment token is `nbt1.<payload>.<sig>`, both parts unpadded base64url:

* payload = the UTF-8 text `kid \n account \n token_id \n expires` (expires: unix
  seconds, or empty: no expiry, the default: a token on a USB stick must keep
  working until an admin revokes it); fields are printable, so never hold a newline;
* sig = HMAC-SHA256(keys[kid], b"nbt1." + payload-as-sent).  The MAC covers the text
  as sent and the signature is compared as text, so no two spellings of a token
  verify (base64 leaves spare bits in the last character of each part).

`verify_token` is pure (no database): the signature is checked before anything is
looked up, so a forged token costs one HMAC.  Revocation and use counts are the
store's business, keyed by the token id; the database keeps only `token_hash`.

The signing keys live in `<state_dir>/enroll-keys.json` (0600).  `rotate` adds a key
that signs from then on; older keys keep verifying until `retire`d, so rotation never
invalidates live tokens.

An agent secret is `nba1.<mac as 12 hex>.<32 random bytes, base64url>`: it names its
host, so the server finds the host from the secret alone; the database stores only
`secret_hash`.  Neither tokens nor secrets are ever logged: log the token id.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass

from ..model import normalize_mac

log = logging.getLogger("netbootd.enroll")

KEYS_FILE = "enroll-keys.json"
TOKEN_PREFIX = "nbt1"
SECRET_PREFIX = "nba1"
MAX_TOKEN_LEN = 512          # checked before any parsing
MAX_FIELD_LEN = 128          # account id, token id, key id
KEY_BYTES = 32
_EXPIRES_MAX = 2 ** 63

_B64 = r"[A-Za-z0-9_-]"
_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}\.({_B64}+)\.({_B64}{{43}})")
_SECRET_RE = re.compile(rf"{SECRET_PREFIX}\.([0-9a-f]{{12}})\.{_B64}{{43}}")
_KID_RE = re.compile(r"[0-9a-f]{8}")
_EXPIRES_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class TokenError(ValueError):
    """A refused token or agent secret; str() is a short reason safe to return
    to the client and to log (it never contains the token)."""


@dataclass(frozen=True)
class TokenClaims:
    kid: str
    account: str
    token_id: str
    expires: int | None


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    """Strict unpadded base64url: the re-encoding must give the same text."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64e(data) != text:
        raise ValueError("non-canonical base64")
    return data


def _mac(key: bytes, payload_b64: str) -> str:
    msg = f"{TOKEN_PREFIX}.{payload_b64}".encode("ascii")
    return _b64e(hmac.new(key, msg, hashlib.sha256).digest())


def _check_field(name: str, value) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_LEN \
            or not value.isprintable():
        raise ValueError(f"{name}: must be a printable string of 1..{MAX_FIELD_LEN} chars")
    return value


def _check_expires(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _EXPIRES_MAX:
        raise ValueError("expires: must be null or a unix time (non-negative integer)")
    return value


# -- the key ring ---------------------------------------------------------------------

def _keys_path(state_dir: str) -> str:
    return os.path.join(state_dir, KEYS_FILE)


def _write_private(path: str, data: bytes, *, exclusive: bool) -> tuple | None:
    """Write `data` to `path` with mode 0600, atomically: a 0600 temp file, fsync,
    then rename (or link when `exclusive`: returns None when `path` already
    exists, so two first starts racing never clobber each other's keys).
    Returns the written file's stamp (rename and link keep inode and mtime)."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fchmod(fd, 0o600)          # whatever the umask was
            os.fsync(fd)
            stamp = _stamp(os.fstat(fd))
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return None
        else:
            os.replace(tmp, path)
            tmp = ""
    finally:
        if tmp:
            os.unlink(tmp)
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return stamp


def _stamp(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _new_kid(taken) -> str:
    while True:
        kid = secrets.token_hex(4)
        if kid not in taken:
            return kid


class KeyRing:
    """The enrollment signing keys: `keys` (kid -> key bytes) and the `current`
    kid that signs new tokens."""

    def __init__(self, keys: dict[str, bytes], current: str):
        if current not in keys:
            raise ValueError(f"current key {current!r} is not in the ring")
        self.keys = dict(keys)
        self.current = current
        self.stamp: tuple | None = None     # (inode, size, mtime_ns) of the file read

    # -- files --

    @classmethod
    def load(cls, state_dir: str) -> "KeyRing":
        """Read the ring; FileNotFoundError when there is none.  A file readable
        by others is tightened to 0600 (with a warning); a damaged file raises
        ValueError naming it (never replaced: that would void every token)."""
        path = _keys_path(state_dir)
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            mode = st.st_mode & 0o777
            if mode & 0o077:
                os.fchmod(fd, 0o600)
                log.warning("%s had mode %04o: tightened to 0600 (it holds signing keys)",
                            path, mode)
            raw = f.read(1 << 20)
        try:
            ring = cls._parse(raw)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{path}: not a valid enrollment key file ({e})") from None
        ring.stamp = _stamp(st)
        return ring

    @classmethod
    def _parse(cls, raw: bytes) -> "KeyRing":
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("version: must be 1")
        keys = {}
        for kid, text in doc["keys"].items():
            if not _KID_RE.fullmatch(kid):
                raise ValueError(f"keys.{kid}: bad key id")
            key = _b64d(text)
            if len(key) != KEY_BYTES:
                raise ValueError(f"keys.{kid}: must be {KEY_BYTES} bytes")
            keys[kid] = key
        return cls(keys, doc["current"])

    def _dump(self) -> bytes:
        doc = {"version": 1, "current": self.current,
               "keys": {k: _b64e(v) for k, v in sorted(self.keys.items())}}
        return (json.dumps(doc, indent=1) + "\n").encode("ascii")

    @classmethod
    def load_or_create(cls, state_dir: str) -> "KeyRing":
        """The ring of `state_dir`, made (one fresh key, 0600) at first use; the
        state dir is created 0700 when missing."""
        try:
            return cls.load(state_dir)
        except FileNotFoundError:
            pass
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        kid = _new_kid(())
        ring = cls({kid: secrets.token_bytes(KEY_BYTES)}, kid)
        ring.stamp = _write_private(_keys_path(state_dir), ring._dump(), exclusive=True)
        if ring.stamp is not None:
            log.info("created enrollment signing key %s in %s", kid, state_dir)
            return ring
        return cls.load(state_dir)     # another process made it first

    def refresh(self, state_dir: str) -> bool:
        """Re-read the file when another process (`tokens` CLI rotation) changed
        it; True when the keys were reloaded.  One stat() when nothing changed.
        A damaged or missing file keeps the keys in memory (and raises nothing)."""
        try:
            if _stamp(os.stat(_keys_path(state_dir))) == self.stamp:
                return False
            disk = KeyRing.load(state_dir)
        except (OSError, ValueError) as e:
            log.warning("enrollment keys not reloaded: %s", e)
            return False
        self.keys, self.current, self.stamp = disk.keys, disk.current, disk.stamp
        return True

    def _reload(self, state_dir: str) -> None:
        """Take the file's keys (another process may have rotated) before a change."""
        try:
            disk = KeyRing.load(state_dir)
        except FileNotFoundError:
            return
        self.keys, self.current, self.stamp = disk.keys, disk.current, disk.stamp

    def rotate(self, state_dir: str) -> str:
        """Add a new key that signs from now on; older keys keep verifying.
        Returns the new key id."""
        self._reload(state_dir)
        kid = _new_kid(self.keys)
        keys = {**self.keys, kid: secrets.token_bytes(KEY_BYTES)}
        new = KeyRing(keys, kid)
        self.stamp = _write_private(_keys_path(state_dir), new._dump(), exclusive=False)
        self.keys, self.current = new.keys, new.current
        log.info("enrollment signing key rotated: %s signs new tokens", kid)
        return kid

    def retire(self, state_dir: str, kid: str) -> None:
        """Drop key `kid`: tokens it signed are refused from now on.  The current
        key cannot be retired (rotate first)."""
        self._reload(state_dir)
        if kid not in self.keys:
            raise KeyError(f"no enrollment key {kid!r}")
        if kid == self.current:
            raise ValueError(f"key {kid} signs new tokens: rotate before retiring it")
        keys = {k: v for k, v in self.keys.items() if k != kid}
        new = KeyRing(keys, self.current)
        self.stamp = _write_private(_keys_path(state_dir), new._dump(), exclusive=False)
        self.keys = new.keys
        log.info("enrollment signing key %s retired", kid)

    # -- tokens --

    def sign(self, account: str, token_id: str, expires: int | None = None) -> str:
        """A token for (account, token_id, expires), signed with the current key."""
        exp = _check_expires(expires)
        payload = "\n".join((self.current, _check_field("account", account),
                              _check_field("token_id", token_id),
                              "" if exp is None else str(exp)))
        p64 = _b64e(payload.encode("utf-8"))
        text = f"{TOKEN_PREFIX}.{p64}.{_mac(self.keys[self.current], p64)}"
        if len(text) > MAX_TOKEN_LEN:
            raise ValueError(f"token would be {len(text)} chars (max {MAX_TOKEN_LEN})")
        return text


def make_token(ring: KeyRing, account: str, token_id: str, expires: int | None) -> str:
    return ring.sign(account, token_id, expires)


def _parse_payload(p64: str) -> TokenClaims:
    try:
        kid, account, token_id, exp = _b64d(p64).decode("utf-8").split("\n")
        if exp and not _EXPIRES_RE.fullmatch(exp):
            raise ValueError("expires")
        return TokenClaims(_check_field("kid", kid), _check_field("account", account),
                           _check_field("token_id", token_id),
                           _check_expires(int(exp)) if exp else None)
    except ValueError:          # bad base64, UTF-8, field count or field
        raise TokenError("malformed token") from None


def verify_token(ring: KeyRing, text: str, now: float) -> TokenClaims:
    """The claims of a genuine, unexpired token, else TokenError(reason).  Pure:
    length and charset first, then structure, the key, the signature (constant
    time), expiry.  The caller then checks revocation and uses by token_id."""
    if not isinstance(text, str) or len(text) > MAX_TOKEN_LEN:
        raise TokenError("malformed token")
    m = _TOKEN_RE.fullmatch(text)
    if m is None:
        raise TokenError("malformed token")
    p64, sig = m.groups()
    claims = _parse_payload(p64)
    key = ring.keys.get(claims.kid)
    if key is None:
        raise TokenError("unknown signing key")
    if not hmac.compare_digest(_mac(key, p64), sig):
        raise TokenError("bad signature")
    if claims.expires is not None and now >= claims.expires:
        raise TokenError("expired")
    return claims


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def token_hash(text: str) -> str:
    """What the database stores for a token (SHA-256, hex)."""
    return _sha256_hex(text)


def new_token_id() -> str:
    """'tok-' + 10 lower-case base32 characters (50 random bits)."""
    return "tok-" + base64.b32encode(secrets.token_bytes(10)).decode("ascii")[:10].lower()


# -- agent secrets --------------------------------------------------------------------

def new_agent_secret(mac: str) -> str:
    """A fresh per-host secret naming `mac` (any spelling normalize_mac takes)."""
    hexmac = normalize_mac(mac).replace(":", "")
    return f"{SECRET_PREFIX}.{hexmac}.{_b64e(secrets.token_bytes(32))}"


def secret_mac(text: str) -> str:
    """The canonical MAC an agent secret names, else TokenError."""
    m = _SECRET_RE.fullmatch(text) if isinstance(text, str) and len(text) < 128 else None
    if m is None:
        raise TokenError("malformed agent secret")
    h = m.group(1)
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))


def secret_hash(text: str) -> str:
    """What the database stores for an agent secret (SHA-256, hex)."""
    return _sha256_hex(text)


def secret_matches(text: str, stored_hash: str | None) -> bool:
    """Constant-time check of a presented secret against the stored hash."""
    if not stored_hash or not isinstance(text, str):
        return False
    return hmac.compare_digest(secret_hash(text).encode(), stored_hash.encode("ascii", "replace"))
