"""One HTTP call to netbootd from inside a test namespace (the e2e worlds'
`api`): a tiny Python script run with `ip netns exec`, which prints the status
and then the body, so an error's reply is read like a success's."""
from __future__ import annotations

import json
import sys

CALL = """
import sys, urllib.error, urllib.request
method, url, auth, body = sys.argv[1:5]
headers = {"Content-Type": "application/json"} if body else {}
if auth:
    headers["Authorization"] = auth
req = urllib.request.Request(url, data=body.encode() or None, method=method, headers=headers)
try:
    r = urllib.request.urlopen(req, timeout=20)
except urllib.error.HTTPError as e:
    r = e
print(r.status)
print(r.read().decode())
"""


def ns_call(lab, ns: str, method: str, url: str, auth: str | None, body=None):
    """(status, JSON reply, or the text when it is not JSON) of one call."""
    r = lab.ns_exec(ns, sys.executable, "-c", CALL, method, url, auth or "",
                    "" if body is None else json.dumps(body), check=False, timeout=30)
    code, _, text = r.stdout.partition("\n")
    try:
        return int(code), (json.loads(text) if text.strip() else None)
    except ValueError:
        return int(code or 0), text or r.stderr
