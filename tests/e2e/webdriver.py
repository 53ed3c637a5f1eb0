"""A minimal W3C WebDriver client over urllib for Debian's headless Chromium
(no selenium): chromedriver on 127.0.0.1, one session, the few commands the
status page tests need, plus a PNG checker for screenshots."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zlib

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "")
                 if p and os.access(p, os.X_OK)), None)
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"     # W3C web element identifier

# Loopback only, never through a proxy.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# The machine has no network: keep Chromium from reaching for Google.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps",
                 "--disable-domain-reliability", "--no-default-browser-check",
                 "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1440,1100"]


class WebDriverError(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(f"{code}: {message[:300]}")


class Browser:
    """The few W3C WebDriver commands these tests need (blocking calls: run
    them off the reactor thread)."""

    def __init__(self, url: str):
        self.url = url
        self.sid = None

    def cmd(self, method: str, path: str, body=None, timeout: float = 60):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with OPENER.open(req, timeout=timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            v = json.loads(e.read() or b"{}").get("value", {})
            raise WebDriverError(v.get("error", str(e.code)), v.get("message", "")) from None

    def session(self, path: str = "", method: str = "GET", body=None):
        return self.cmd(method, f"/session/{self.sid}{path}", body)

    def start(self, args: list[str]) -> None:
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "pageLoadStrategy": "normal",
            "unhandledPromptBehavior": "ignore",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        self.sid = self.cmd("POST", "/session", caps, timeout=90)["sessionId"]

    def quit(self) -> None:
        if self.sid:
            try:
                self.cmd("DELETE", f"/session/{self.sid}", timeout=30)
            finally:
                self.sid = None

    def get(self, url: str) -> None:
        self.session("/url", "POST", {"url": url})

    def js(self, script: str, *args):
        return self.session("/execute/sync", "POST", {"script": script, "args": list(args)})

    def find(self, css: str) -> list[str]:
        found = self.session("/elements", "POST", {"using": "css selector", "value": css})
        return [e[ELEMENT] for e in found]

    def one(self, css: str) -> str:
        found = self.find(css)
        assert found, f"no element matches {css!r}"
        return found[0]

    def click(self, css: str) -> None:
        self.session(f"/element/{self.one(css)}/click", "POST")

    def type(self, css: str, text: str) -> None:
        self.session(f"/element/{self.one(css)}/value", "POST", {"text": text})

    def text(self, css: str) -> str:
        return self.session(f"/element/{self.one(css)}/text")

    def alert_open(self) -> bool:
        try:
            self.session("/alert/text")
            return True
        except WebDriverError as e:
            if e.code == "no such alert":
                return False
            raise

    def console(self) -> list[dict]:
        """Browser console entries since the last call (chromedriver's log
        endpoint): CSP violations and script errors show up here."""
        return self.session("/se/log", "POST", {"type": "browser"})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.session("/screenshot"))

    def wait(self, script: str, *args, timeout: float = 8.0, what: str = ""):
        """Poll a JS function body until it returns something truthy."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            last = self.js(script, *args)
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or script!r} (last: {last!r})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def chromium_session(extra_args: tuple = ()):
    """chromedriver (127.0.0.1 only) + one headless Chromium session with a
    throw-away profile; both are stopped, by the process we started, on exit."""
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="netbootd-chromium-")
    log = open(os.path.join(profile, "chromedriver.log"), "wb")
    drv = subprocess.Popen([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
                           stdout=log, stderr=subprocess.STDOUT)
    b = Browser(f"http://127.0.0.1:{port}")
    try:
        end = time.monotonic() + 20
        while True:
            try:
                if b.cmd("GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, WebDriverError):
                pass
            if time.monotonic() > end or drv.poll() is not None:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        b.start(CHROMIUM_ARGS + list(extra_args)
                + [f"--user-data-dir={os.path.join(profile, 'profile')}"])
        yield b
    finally:
        try:
            b.quit()
        finally:
            drv.terminate()
            try:
                drv.wait(10)
            except subprocess.TimeoutExpired:
                drv.kill()
                drv.wait()
            log.close()
            shutil.rmtree(profile, ignore_errors=True)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature, that every
    chunk's CRC is right and that it has IHDR, IDAT and IEND."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, size, kinds = 8, None, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        kinds.append(kind)
        pos += 12 + n
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    # a real picture, not a blank page: decompressed scanlines vary
    raw = zlib.decompress(_idat(data))
    assert len(set(raw[::97])) > 8, "the screenshot looks blank"
    return size


def _idat(data: bytes) -> bytes:
    pos, out = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            out.append(data[pos + 8:pos + 8 + n])
        pos += 12 + n
    return b"".join(out)
