"""Command line: argument parsing and the subcommands that need no reactor.

`serve` is run by __main__ (the only module that touches the global
reactor).  The read-only `hosts`/`leases`/`events` commands read the state
database directly (SQLite allows readers beside the running daemon); the
JSON API replaces them for remote use.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import config as config_mod
from .store.sqlite import DB_NAME, Store


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netbootd", description="network-boot appliance")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("--config", help="TOML config file (default: embedded defaults)")
    s.add_argument("--mode", choices=("proxy", "full"), help="DHCP mode (default: proxy)")
    s.add_argument("--interface", action="append", default=[],
                   help="serve on this interface (repeatable; default: all with IPv4 but lo)")
    s.add_argument("--state-dir", help=f"state directory (default {config_mod.DEFAULT_STATE_DIR})")
    s.add_argument("--log-level", choices=("debug", "info", "warn", "error"))

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    chk = csub.add_parser("check", help="validate a config file")
    chk.add_argument("file")

    lab = sub.add_parser("lab", help="boot a qemu VM against netbootd in private namespaces")
    lab.add_argument("--uefi", action="store_true", help="OVMF UEFI PXE instead of SeaBIOS+iPXE")
    lab.add_argument("--http-boot", action="store_true", help="OVMF UEFI HTTP Boot")
    lab.add_argument("--proxy", action="store_true",
                     help="proxyDHCP mode beside a dnsmasq that hands out addresses")
    lab.add_argument("--nic", default="virtio-net-pci", choices=("virtio-net-pci", "e1000"))
    lab.add_argument("--timeout", type=float, default=300.0)

    t = sub.add_parser("token", help="admin token")
    t.add_argument("action", choices=("rotate", "show-path"))
    t.add_argument("--state-dir")
    t.add_argument("--config")

    st = sub.add_parser("state", help="back up, list and restore the state (db, token, config)")
    st.add_argument("action", choices=("backup", "list", "restore"))
    st.add_argument("-n", "--name", help="backup name (letters, digits, - _ .)")
    st.add_argument("--force", action="store_true", help="backup: overwrite a backup of that name")
    st.add_argument("--restore-config", action="store_true",
                    help="restore: also write the config file back to its recorded path")
    st.add_argument("--json", action="store_true", help="list: machine-readable output")
    st.add_argument("--state-dir")
    st.add_argument("--config")

    for name, helptext in (("hosts", "hosts in the registry"), ("leases", "DHCP leases"),
                           ("events", "recent events")):
        r = sub.add_parser(name, help=helptext)
        if name == "hosts":
            _assign_args(r)
        else:
            r.add_argument("--server", help="daemon URL (default http://127.0.0.1:<http_port>)")
        r.add_argument("action", nargs="?", default="list", choices=(
            ("list", "show", "assign", "approve", "retire", "delete") if name == "hosts"
            else ("list", "show")))
        r.add_argument("--offline", action="store_true",
                       help="read the state database directly instead of the daemon's API")
        if name == "events":
            r.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
            r.add_argument("--mac", help="only this host's events")
        if name == "hosts":
            r.add_argument("--state", help="hosts list: only hosts in this state")
            r.add_argument("-q", "--query", help="hosts list: substring of mac/hostname/ip")
            r.add_argument("--all", action="store_true",
                           help="hosts list: every page, not only the first --limit hosts")
            r.add_argument("--cursor", help="hosts list: start after this cursor (printed "
                                            "when more hosts remain)")
        r.add_argument("key", nargs="?", help="MAC (hosts show) or address (leases show)")
        if name == "hosts":
            r.add_argument("profile", nargs="?", help="profile (hosts assign MAC PROFILE)")
        r.add_argument("--state-dir")
        r.add_argument("--config")
        r.add_argument("--json", action="store_true", help="machine-readable output")
        r.add_argument("--limit", type=int, default=100)
    return p


def _assign_args(p) -> None:
    """Options of `hosts assign MAC PROFILE` (sent to the running daemon)."""
    p.add_argument("--kernel", help="linux: kernel URL or file under the files root")
    p.add_argument("--initrd", action="append", default=[], help="linux: initrd (repeatable)")
    p.add_argument("--cmdline", help="linux: kernel command line")
    p.add_argument("--san-uri", help="sanboot: iPXE SAN URI")
    p.add_argument("--initiator-iqn", help="sanboot: initiator IQN")
    p.add_argument("--server", help="daemon URL (default http://127.0.0.1:<http_port>)")


def _request(url: str, method: str = "GET", body: dict | None = None,
             token: str | None = None, timeout: float = 30) -> tuple[int, dict | list]:
    """One JSON request; (status, decoded body).  Connection errors (OSError)
    propagate: callers decide whether that is fatal or means "no daemon"."""
    import urllib.error
    import urllib.request
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, {"error": e.reason}


def api_call(cfg: config_mod.Config, method: str, path: str, body: dict | None = None,
             server: str | None = None) -> tuple[int, dict | list]:
    """Call the running daemon's API with the admin token from the state dir."""
    from .auth import admin_token as secrets
    try:
        with open(secrets.token_path(cfg.state_dir), encoding="ascii") as f:
            token = f.read().strip()
    except OSError as e:
        raise SystemExit(f"netbootd: cannot read the admin token: {e}")
    base = server or f"http://127.0.0.1:{cfg.boot.http_port}"
    try:
        return _request(base + path, method, body, token)
    except OSError as e:
        raise SystemExit(f"netbootd: cannot reach the daemon at {base}: {e}")


def _mac(key: str | None, usage: str) -> str | None:
    """The MAC argument normalized, or None after printing why not."""
    from .model import normalize_mac
    if not key:
        print(f"netbootd: {usage}", file=sys.stderr)
        return None
    try:
        return normalize_mac(key)
    except ValueError as e:
        print(f"netbootd: {e}", file=sys.stderr)
        return None


def cmd_assign(args) -> int:
    cfg = effective_config(args)
    mac = _mac(args.key if args.profile else None, "usage: hosts assign MAC PROFILE [options]")
    if mac is None:
        return 2
    pargs: dict = {}
    if args.kernel:
        pargs["kernel"] = args.kernel
    if args.initrd:
        pargs["initrds"] = args.initrd
    if args.cmdline is not None:
        pargs["cmdline"] = args.cmdline
    if args.san_uri:
        pargs["san_uri"] = args.san_uri
    if args.initiator_iqn:
        pargs["initiator_iqn"] = args.initiator_iqn
    code, reply = api_call(cfg, "POST", f"/api/v1/hosts/{mac}/assign",
                           {"profile": args.profile, "args": pargs}, args.server)
    if code != 200:
        print(f"netbootd: assign refused ({code}): {reply.get('error')}", file=sys.stderr)
        return 1
    print(f"{mac}: {reply['state']} profile={reply['profile']}")
    return 0


def cmd_token(args) -> int:
    from .auth import admin_token as secrets
    cfg = effective_config(args)
    if args.action == "show-path":
        print(secrets.token_path(cfg.state_dir))
        return 0
    tok = secrets.rotate_token(cfg.state_dir)
    print(f"new admin token (restart the daemon to apply): {tok}")
    return 0


def cmd_state(args) -> int:
    """state backup|list|restore (netbootd/store/backup.py); restore refuses while a
    daemon holds the state lock."""
    from .store import backup as state, lock as statelock
    try:
        cfg = effective_config(args)
    except config_mod.ConfigError as e:
        print(f"netbootd: config error: {e}", file=sys.stderr)
        return 2
    if args.action != "list" and not args.name:
        print(f"netbootd: state {args.action} needs -n NAME", file=sys.stderr)
        return 2
    try:
        if args.action == "list":
            rows = state.list_backups(cfg.state_dir)
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                for r in rows:
                    r["created"] = _fmt_time(r.get("created")) if "error" not in r else "?"
                    r["schema"] = r.get("schema_version", "?")
                    r["note"] = r.get("error")
                print(_table(rows, ["name", "created", "size", "schema", "note"]))
            return 0
        if args.action == "backup":
            m = state.backup(cfg.state_dir, args.name, config_path=args.config,
                             files_root=cfg.boot.files_root,
                             discover_img=cfg.boot.discover_initrd, force=args.force)
            print(f"{m['archive']}: {m['archive_size']} bytes, schema {m['schema_version']}, "
                  f"{', '.join(e['name'] for e in m['files'])}")
            print(f"media: {m['media']['entries']} file(s) indexed, not copied")
            return 0
        r = state.restore(cfg.state_dir, args.name, restore_config=args.restore_config)
    except statelock.StateLocked as e:
        print(f"netbootd: refusing to restore: {e}", file=sys.stderr)
        return 1
    except state.BackupError as e:
        print(f"netbootd: {e}", file=sys.stderr)
        return 1
    print(f"restored {r['database']} (schema {r['schema_version']}) from {r['archive']}")
    if r["migrates_to"]:
        print(f"  the next start migrates it to schema {r['migrates_to']}")
    if r["safety_copy"]:
        print(f"  previous database kept as {r['safety_copy']}")
    print(f"  admin token: {r['token'] or 'not in the backup, left as is'}")
    c = r["config"]
    if c and c["restored"]:
        print(f"  config restored to {c['path']}")
    elif c:
        print(f"  config not restored: it is {c['member']} in {r['archive']} (was {c['path']}); "
              f"pass --restore-config, or: tar -xzOf {r['archive']} {c['member']}")
    for d in r["media_differences"]:
        print(f"  media differs from the backup: {d}")
    return 0


def effective_config(args) -> config_mod.Config:
    """Config file, then command-line overrides."""
    cfg = config_mod.load(getattr(args, "config", None))
    over = {}
    if getattr(args, "mode", None):
        over["mode"] = args.mode
    if getattr(args, "interface", None):
        over["interfaces"] = tuple(args.interface)
    if getattr(args, "state_dir", None):
        over["state_dir"] = args.state_dir
    if getattr(args, "log_level", None):
        over["log_level"] = args.log_level
    return cfg.replace(**over) if over else cfg


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = [max([len(c)] + [len(str(r.get(c, "") if r.get(c) is not None else "-"))
                              for r in rows]) for c in cols]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths))]
    for r in rows:
        lines.append("  ".join(str(r.get(c) if r.get(c) is not None else "-").ljust(w)
                               for c, w in zip(cols, widths)))
    return "\n".join(lines)


def _fmt_time(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _print_rows(args, rows: list[dict], cols: list[str]) -> None:
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return
    view = []
    for r in rows:
        v = dict(r)
        for k in ("ends", "last_seen", "ts"):
            if k in v and k in cols:
                v[k] = _fmt_time(v[k])
        if isinstance(v.get("detail"), dict):
            v["detail"] = json.dumps(v["detail"], separators=(",", ":"))
        view.append(v)
    print(_table(view, cols))


HOST_COLS = ["mac", "state", "hostname", "arch_name", "ip", "profile", "last_seen"]
LEASE_COLS = ["address", "mac", "state", "hostname", "network", "ends"]
EVENT_COLS = ["ts", "mac", "kind", "detail"]


def cmd_api(args) -> int | None:
    """hosts/leases/events through the running daemon's API.  Returns None
    when the daemon cannot be reached (the caller may read the DB)."""
    cfg = effective_config(args)
    base = args.server or f"http://127.0.0.1:{cfg.boot.http_port}"
    if args.cmd == "hosts" and args.action in ("approve", "retire", "delete"):
        mac = _mac(args.key, f"usage: hosts {args.action} MAC")
        if mac is None:
            return 2
        method, path = ("DELETE", f"/api/v1/hosts/{mac}") if args.action == "delete" else \
            ("POST", f"/api/v1/hosts/{mac}/{args.action}")
        code, reply = api_call(cfg, method, path, None, base)
        if code != 200:
            print(f"netbootd: {args.action} refused ({code}): {reply.get('error')}",
                  file=sys.stderr)
            return 1
        print(f"{mac}: " + ("deleted" if args.action == "delete" else reply["state"]))
        return 0
    try:
        if args.cmd == "hosts" and args.action == "show":
            mac = _mac(args.key, "hosts show needs a MAC")
            if mac is None:
                return 2
            code, host = _get(base, f"/api/v1/hosts/{mac}")
            if code != 200:
                print(f"netbootd: {host.get('error')}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(host, indent=1, default=str))
                return 0
            timeline = host.pop("timeline", [])
            host.pop("last_event", None)
            _print_rows(args, [host], HOST_COLS)
            print()
            _print_rows(args, timeline, EVENT_COLS)
            return 0
        if args.cmd == "hosts":
            code, rows = _host_pages(args, base)
            cols = HOST_COLS
        elif args.cmd == "leases":
            code, rows = _get(base, "/api/v1/leases")
            rows = [r for r in rows if not args.key or r["address"] == args.key] \
                if code == 200 else rows
            cols = LEASE_COLS
        else:
            mac = _mac(args.mac, "") if args.mac else None
            if args.mac and mac is None:
                return 2
            q = f"&mac={mac}" if mac else ""
            code, rows = _get(base, f"/api/v1/events?limit={args.limit}{q}")
            cols = EVENT_COLS
            if code == 200 and args.follow:
                return _follow(args, base, rows, q)
    except OSError:
        return None
    if code != 200:
        print(f"netbootd: {rows.get('error')}", file=sys.stderr)
        return 1
    _print_rows(args, rows, cols)
    return 0


def _get(base: str, path: str):
    return _request(base + path, timeout=10)


def _host_pages(args, base: str) -> tuple[int, list | dict]:
    """hosts list through the API, a page (of --limit, at most 1000) at a time:
    the first page, or every page with --all.  When hosts remain, says how to
    get them on stderr, so stdout stays a table or one JSON list."""
    import urllib.parse
    params = {"limit": max(1, min(args.limit, 1000))}
    if args.state:
        params["state"] = args.state
    if args.query:
        params["q"] = args.query
    cursor, rows = args.cursor, []
    while True:
        q = dict(params, **({"cursor": cursor} if cursor else {}))
        code, page = _get(base, "/api/v1/hosts?" + urllib.parse.urlencode(q))
        if code != 200:
            return code, page
        rows += page["hosts"]
        cursor = page["next"]
        if not cursor:
            return 200, rows
        if not args.all:
            print(f"netbootd: {len(rows)} of {page['total']} hosts shown; --all for every "
                  f"page, or --cursor {cursor} for the next", file=sys.stderr)
            return 200, rows


def _follow(args, base: str, rows: list, q: str) -> int:
    """events -f: print, then poll for newer events until interrupted."""
    last = rows[-1]["id"] if rows else 0
    _print_rows(args, rows, EVENT_COLS)
    try:
        while True:
            time.sleep(1.0)
            code, new = _get(base, f"/api/v1/events?after={last}&limit=1000{q}")
            if code == 200 and new:
                last = new[-1]["id"]
                for ev in new:
                    print(json.dumps(ev, default=str) if args.json else
                          f"{_fmt_time(ev['ts'])}  {ev['mac'] or '-':<17}  {ev['kind']:<16} "
                          f"{json.dumps(ev['detail'], separators=(',', ':'))}", flush=True)
    except KeyboardInterrupt:
        return 0


def cmd_read(args) -> int:
    mutating = args.cmd == "hosts" and args.action in ("approve", "retire", "delete")
    # A state dir named without a server means "read that state dir".
    if not args.offline and (mutating or args.server or not args.state_dir):
        rc = cmd_api(args)
        if rc is not None:
            return rc
        if mutating:
            print("netbootd: the daemon is not reachable; changes need it", file=sys.stderr)
            return 1
        print("netbootd: daemon not reachable; reading the state database directly",
              file=sys.stderr)
    cfg = effective_config(args)
    if not os.path.exists(os.path.join(cfg.state_dir, DB_NAME)):
        print(f"netbootd: no state database in {cfg.state_dir}", file=sys.stderr)
        return 1
    store = Store(cfg.state_dir)
    now = time.time()
    if args.cmd == "hosts":
        sql, qargs = "SELECT * FROM hosts ORDER BY first_seen, mac", ()
        if not args.all:
            sql, qargs = sql + " LIMIT ?", (max(1, args.limit),)
        if args.action == "show":
            mac = _mac(args.key, "hosts show needs a MAC")
            if mac is None:
                return 2
            sql, qargs = "SELECT * FROM hosts WHERE mac = ?", (mac,)
        rows = [dict(r) for r in store.query(sql, qargs)]
        if args.action == "show" and not rows:
            print(f"netbootd: no host {args.key}", file=sys.stderr)
            return 1
        if args.action == "show":
            rows[0]["events"] = [dict(e) for e in store.query(
                "SELECT ts, kind, detail FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?",
                (rows[0]["mac"], args.limit))]
        cols = ["mac", "state", "arch", "vendor_class", "uuid", "interface", "last_seen"]
    elif args.cmd == "leases":
        rows = [dict(r) for r in store.query("SELECT * FROM leases ORDER BY address")]
        for r in rows:
            r.pop("client_key", None)
            if r["state"] == "active" and r["ends"] <= now:
                r["state"] = "expired"
        if args.key:
            rows = [r for r in rows if r["address"] == args.key]
        cols = ["address", "mac", "state", "hostname", "network", "ends"]
    else:
        rows = [dict(r) for r in store.query(
            "SELECT * FROM events ORDER BY id DESC LIMIT ?", (args.limit,))][::-1]
        cols = ["ts", "mac", "kind", "detail"]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        for r in rows:
            for k in ("ends", "last_seen", "ts"):
                if k in r and k in cols:
                    r[k] = _fmt_time(r[k])
        print(_table(rows, cols))
        if args.cmd == "hosts" and args.action == "show":
            for e in rows[0]["events"][::-1]:
                print(f"  {_fmt_time(e['ts'])}  {e['kind']:<18} {e['detail']}")
    return 0


def cmd_config_check(args) -> int:
    try:
        cfg = config_mod.load(args.file)
    except config_mod.ConfigError as e:
        print(f"netbootd: config error: {e}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK (mode={cfg.mode}, {len(cfg.networks)} network(s))")
    return 0
