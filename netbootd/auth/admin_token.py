"""The admin token: created at first start in the state dir, mode 0600."""
from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat

log = logging.getLogger("netbootd.auth")

TOKEN_FILE = "admin.token"


def token_path(state_dir: str) -> str:
    return os.path.join(state_dir, TOKEN_FILE)


def ensure_token(state_dir: str) -> tuple[str, bool]:
    """Return (token, created).  The file is created with O_EXCL and 0600, so
    the token is never readable by others, not even for an instant; one found
    looser (an older netbootd, a copy by hand) is tightened to 0600."""
    path = token_path(state_dir)
    try:
        with open(path, encoding="ascii") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                os.fchmod(f.fileno(), 0o600)
                log.warning("%s was mode %04o: tightened to 0600", path, mode)
            return f.read().strip(), False
    except FileNotFoundError:
        pass
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    tok = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(tok + "\n")
    return tok, True


def rotate_token(state_dir: str) -> str:
    path = token_path(state_dir)
    tmp = path + ".new"
    tok = secrets.token_hex(32)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)     # a leftover .new of another mode keeps its mode otherwise
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(tok + "\n")
    os.replace(tmp, path)
    return tok


def check(expected: str, header: bytes | None) -> bool:
    """Constant-time check of an 'Authorization: Bearer <token>' header."""
    if not header or not header.startswith(b"Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip(), expected.encode("ascii"))
