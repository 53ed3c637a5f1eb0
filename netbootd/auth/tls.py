"""netbootd's TLS certificate: a self-signed one made here, its public-key pin,
and the checks the HTTPS listener runs before it serves.

The pin is curl's --pinnedpubkey format, ``sha256//<base64 of the SHA-256 of the
DER SubjectPublicKeyInfo>``: the agent on a boot medium checks it before it sends
anything (docs/agent-protocol.md "HTTPS").  It names the key, not the certificate:
a renewed certificate for the same key keeps the pin.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import re
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PIN_RE = re.compile(r"^sha256//[A-Za-z0-9+/]{43}=$")
_DNS_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]"
                     r"([A-Za-z0-9-]{0,62}))*$")


class TlsError(ValueError):
    """A certificate or key netbootd cannot use; the text names the file and why."""


def _read_cert(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TlsError(f"{path}: cannot read the certificate: {e.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            return x509.load_der_x509_certificate(data)
        except ValueError:
            raise TlsError(f"{path}: not a PEM or DER X.509 certificate") from None


def pin_of_public_key(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def pubkey_pin(cert_path: str) -> str:
    """``sha256//BASE64``: the SHA-256 of the certificate's SubjectPublicKeyInfo
    (what ``curl --pinnedpubkey`` compares)."""
    return pin_of_public_key(_read_cert(str(cert_path)).public_key())


def valid_pin(text: str) -> bool:
    return bool(PIN_RE.match(text or ""))


def medium_pin(flavour: str, server_url: str, pin: str | None, tls_cert: str | None,
               names: tuple[str, str] = ("server_url", "pin")) -> tuple[str | None, str]:
    """The pin a boot medium carries, for `netbootd media build` and the media API
    alike: an https `full` medium takes `pin`, else the daemon's own certificate's
    ([http] tls_cert: what `netbootd tls pin` prints), and needs the agent's pinned
    TLS client (curl) to pack; other media keep `pin` as given (media.medium_values
    checks it).  (pin, "") or (None, why); `names` are the caller's words for the
    URL and the pin (--server-url, --pin on the command line)."""
    if not (server_url or "").startswith("https://") or flavour != "full":   # net: http only
        return pin, ""
    if not pin:
        if not tls_cert:
            return None, (f"an https {names[0]} needs {names[1]} sha256//... (netbootd tls "
                          "pin), or [http] tls_cert in the config to take it from")
        try:
            pin = pubkey_pin(tls_cert)
        except (OSError, ValueError) as e:
            return None, f"[http] tls_cert: {e}"
    from iso_builder import initrd
    if initrd.find_tls_client() is None:
        return None, ("an https medium needs the agent's pinned TLS client (Debian's curl, "
                      "packed from /usr/bin/curl): install the curl package")
    return pin, ""


def check_key_mode(key_path: str, where: str = "http.tls_key") -> None:
    """The private key must be a regular file nobody but its owner can read."""
    try:
        st = os.stat(key_path)
    except OSError as e:
        raise TlsError(f"{where}: {key_path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TlsError(f"{where}: {key_path} is not a regular file")
    if st.st_mode & 0o077:
        raise TlsError(f"{where}: {key_path} is readable by others (mode "
                       f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")


def check_pair(cert_path: str, key_path: str) -> dict:
    """Everything the HTTPS listener needs, checked: the key file's mode, both
    parse, the key is the certificate's.  Returns facts (pin, subject, expiry)."""
    check_key_mode(key_path)
    cert = _read_cert(cert_path)
    try:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as e:
        raise TlsError(f"http.tls_key: {key_path}: {e.strerror}") from None
    except (ValueError, TypeError) as e:
        raise TlsError(f"http.tls_key: {key_path}: not an unencrypted PEM private key "
                       f"({e})") from None
    if pin_of_public_key(key.public_key()) != pin_of_public_key(cert.public_key()):
        raise TlsError(f"http.tls_key: {key_path} is not the key of {cert_path}")
    return {"pin": pin_of_public_key(cert.public_key()),
            "subject": cert.subject.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat()}


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _DNS_RE.match(value):
        raise TlsError(f"--san {value!r} is neither an IP address nor a DNS name")
    return x509.DNSName(value)


def make_selfsigned(cert_path: str, key_path: str, *, cn: str, sans=(), days: int = 3650,
                    overwrite: bool = False) -> dict:
    """A P-256 key (written 0600, O_EXCL unless overwrite) and a self-signed
    certificate for `cn` + `sans` (IP addresses or DNS names; the CN is added as a
    SAN too).  Returns facts (paths, pin)."""
    if not cn or len(cn) > 64 or any(c in cn for c in "\0\n\r"):
        raise TlsError("--cn must be 1..64 printable characters")
    names = [_san(s) for s in dict.fromkeys([*_cn_san(cn), *sans])]
    if not overwrite:
        for p in (cert_path, key_path):
            if os.path.exists(p):
                raise TlsError(f"{p} exists (--force replaces it)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write(key_path, key_pem, 0o600, overwrite)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, overwrite)
    return {"cert": cert_path, "key": key_path, "pin": pin_of_public_key(key.public_key()),
            "cn": cn, "sans": [str(getattr(n, "value", n)) for n in names],
            "not_after": cert.not_valid_after_utc.isoformat()}


def _cn_san(cn: str) -> list[str]:
    """The CN as a SAN when it is an IP address or a DNS name (clients match SANs)."""
    try:
        _san(cn)
        return [cn]
    except TlsError:
        return []


def _write(path: str, data: bytes, mode: int, overwrite: bool) -> None:
    """Written under a temp name with its final mode from the start, then renamed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)   # fails if someone created it meanwhile
            os.unlink(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
