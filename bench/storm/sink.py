#!/usr/bin/env python3
"""A webhook sink for the storm: accepts netbootd's hook POSTs on
127.0.0.1:<port> (inside the server namespace) and appends each JSON body as
one line to a file.  Runs until SIGTERM; bounded by --max-seconds anyway."""
from __future__ import annotations

import argparse
import http.server
import json
import signal
import sys
import threading


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args()
    out = open(a.out, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            try:
                out.write(json.dumps(json.loads(body)) + "\n")
                code = 200
            except ValueError:
                code = 400
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    limit = threading.Timer(a.max_seconds, srv.shutdown)
    limit.daemon = True
    limit.start()
    print("sink ready", flush=True)
    srv.serve_forever()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
