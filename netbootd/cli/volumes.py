"""`netbootd volume create|resize|snapshot|clone|delete|list|show|sanboot|unexport|exports|
capture|job`
and `netbootd deploy MAC --from GOLDEN` (issue 13; /api/v1/volumes, net/http/api_storage.py).

A change is a job on the daemon: the command follows it to its end (GET
/api/v1/jobs/{id}), drawing a progress bar on a terminal (quiet otherwise), and
prints the result or the refusal.  Sizes are read here ("10G", "512M", bytes:
policy/volumes.parse_size) and sent in bytes.  list/show/exports read the API
(open to reads); volumes live in the pools, so there is no offline read."""
from __future__ import annotations

import sys
import time
import urllib.parse

from ..policy.volumes import VolumeError, human, parse_size
from .client import ApiClient, Unreachable, admin_call, error_of
from .common import add_command_args, effective_config, fail, fmt_time, print_json, print_rows

VOLUME_COLS = ["name", "pool", "kind", "size", "used", "origin", "exported_to", "created"]
POOL_COLS = ["name", "backend", "total", "used", "free", "provisioned", "volumes", "error"]
EXPORT_COLS = ["volume", "pool", "host", "target_iqn", "chap", "created"]
POLL = 0.2


EFI_HELP = ("UEFI: the loader on the volume when it is not \\EFI\\BOOT\\BOOTX64.EFI, e.g. "
            "'\\EFI\\debian\\shimx64.efi' (an installed OS; backslashes)")


def add_parser(sub) -> None:
    v = sub.add_parser("volume", help="storage volumes (pools in [[storage.pools]]) and "
                                      "their iSCSI exports")
    vsub = v.add_subparsers(dest="volume_cmd", required=True)

    def cmd(name, help_, func):
        p = vsub.add_parser(name, help=help_)
        add_command_args(p)
        p.set_defaults(func=func)
        return p

    c = cmd("create", "a new empty (thin) volume", create)
    c.add_argument("name", help="1-63 of a-z 0-9 _ -")
    c.add_argument("--size", required=True, help="10G, 512M, 2TiB or bytes")
    c.add_argument("--pool", help="the pool (needed when several are configured)")
    r = cmd("resize", "grow a volume (a shrink needs --force)", resize)
    r.add_argument("name")
    r.add_argument("--size", required=True)
    r.add_argument("--force", action="store_true",
                   help="allow a shrink (shrink the guest's filesystem first)")
    s = cmd("snapshot", "a read-only point-in-time copy", snapshot)
    s.add_argument("name")
    s.add_argument("snapshot", help="the snapshot's name")
    c = cmd("clone", "a writable copy (copy-on-write where the pool can)", clone)
    c.add_argument("name")
    c.add_argument("new", help="the clone's name")
    cmd("delete", "delete a volume no host uses", delete).add_argument("name")
    cmd("list", "pools and their volumes", list_)
    cmd("show", "one volume", show).add_argument("name")
    b = cmd("sanboot", "export a volume to one host (its IQN, CHAP) and assign it sanboot",
            sanboot)
    b.add_argument("name")
    b.add_argument("--host", required=True, help="the host's MAC")
    b.add_argument("--efi-filename", help=EFI_HELP)
    cmd("unexport", "take a volume's export down (no host may boot from it)",
        unexport).add_argument("name")
    cmd("exports", "every export: volume, host, target (never a secret)", exports)
    cmd("rotate-chap", "a new CHAP secret for a host's exports (in its next boot script)",
        rotate_chap).add_argument("mac")

    c = cmd("capture", "capture a host's disk into a new (or empty) volume: its agent "
                       "streams the disk; follows the job with a progress bar", capture)
    c.add_argument("mac", help="the host (its agent must be polling)")
    c.add_argument("--disk", required=True, help="the disk as the inventory names it "
                                                 "(vda, /dev/sda, nvme0n1)")
    c.add_argument("--volume", required=True, help="the volume to capture into (made, sized "
                                                   "to the disk, unless an empty one exists)")
    c.add_argument("--pool", help="the pool of a new volume (needed when several exist)")
    c.add_argument("--no-wait", action="store_true",
                   help="print the job and return (follow it with: volume job ID --wait)")
    j = cmd("job", "one job (a capture's progress): state, bytes done, result or error", job)
    j.add_argument("id")
    j.add_argument("--wait", action="store_true", help="follow it to its end (progress bar)")

    d = sub.add_parser("deploy", help="clone a golden volume for a host, export it to that "
                                      "host and assign it sanboot, in one step")
    add_command_args(d)
    d.add_argument("mac")
    d.add_argument("--from", dest="source", required=True, help="the golden volume")
    d.add_argument("--name", help="the new volume (default GOLDEN-<mac hex>)")
    d.add_argument("--efi-filename", help=EFI_HELP)
    d.set_defaults(func=deploy)


def _path(name: str, tail: str = "") -> str:
    return "/api/v1/volumes/" + urllib.parse.quote(name, safe="") + tail


def _size(text: str) -> int:
    try:
        return parse_size(text, "--size")
    except VolumeError as e:
        raise SystemExit(f"netbootd: {e}") from None


def _bar(job: dict, out=sys.stderr) -> None:
    total, done = job.get("total") or 0, job.get("done") or 0
    if not total:
        return
    width = 30
    n = min(width, done * width // total)
    out.write(f"\r{job['op']} {job['target']} [{'#' * n}{'.' * (width - n)}] "
              f"{done * 100 // total:3d}% {human(done)} / {human(total)}  ")
    out.flush()


def follow(args, method: str, path: str, body: dict | None, what: str,
           first: dict | None = None) -> dict | None:
    """Start a job (or take ``first``, one already started) and follow it to its end;
    its result, or None after printing why."""
    job = first if first is not None else admin_call(args, method, path, body, what)
    if job is None:
        return None
    api = ApiClient(effective_config(args), args.server)
    tty = sys.stderr.isatty() and not args.json
    drew = False
    while job.get("state") == "running":
        if tty:
            _bar(job)
            drew = drew or bool(job.get("total"))
        time.sleep(POLL)
        try:
            code, job = api.get(f"/api/v1/jobs/{job['id']}")
        except Unreachable as e:
            fail(f"{what}: lost the daemon while the job ran: {e}")
            return None
        if code != 200:
            fail(f"{what}: {error_of(job)}")
            return None
    if drew:
        _bar(job)
        sys.stderr.write("\n")
    if job["state"] == "failed":
        err = job.get("error") or {}
        fail(f"{what} refused ({err.get('status')}): {err.get('error')}")
        return None
    return job["result"]


def _done(args, result, human_line) -> int:
    if result is None:
        return 1
    print_json(result) if args.json else print(human_line(result))
    return 0


def _vol_line(v: dict) -> str:
    return (f"volume {v['name']} ({v['kind']}) in pool {v['pool']}: {human(v['size'])}"
            + (f", from {v['origin']}" if v.get("origin") else ""))


# -- changes ---------------------------------------------------------------------------
def create(args) -> int:
    body = {"name": args.name, "size": _size(args.size), "pool": args.pool}
    return _done(args, follow(args, "POST", "/api/v1/volumes", body, "volume create"),
                 _vol_line)


def resize(args) -> int:
    body = {"size": _size(args.size), "force": args.force}
    return _done(args, follow(args, "POST", _path(args.name, "/resize"), body,
                              "volume resize"), _vol_line)


def snapshot(args) -> int:
    return _done(args, follow(args, "POST", _path(args.name, "/snapshot"),
                              {"name": args.snapshot}, "volume snapshot"), _vol_line)


def clone(args) -> int:
    return _done(args, follow(args, "POST", _path(args.name, "/clone"), {"name": args.new},
                              "volume clone"), _vol_line)


def delete(args) -> int:
    return _done(args, follow(args, "DELETE", _path(args.name), None, "volume delete"),
                 lambda r: f"volume {r['deleted']} deleted")


def _export_line(e: dict) -> str:
    return (f"volume {e['volume']} exported to host {e['host']} only "
            f"(initiator {e['initiator_iqn']}, CHAP {'on' if e['chap'] else 'off'}); "
            f"host assigned sanboot {e['san_uri']}")


def _efi(args) -> dict:
    efi = getattr(args, "efi_filename", None)
    return {"efi_filename": efi} if efi else {}


def sanboot(args) -> int:
    return _done(args, follow(args, "POST", f"/api/v1/hosts/{args.host}/sanboot",
                              {"volume": args.name, **_efi(args)}, "volume sanboot"),
                 _export_line)


def unexport(args) -> int:
    return _done(args, follow(args, "DELETE", "/api/v1/exports/" +
                              urllib.parse.quote(args.name, safe=""), None, "volume unexport"),
                 lambda r: f"volume {r['unexported']} no longer exported")


def rotate_chap(args) -> int:
    return _done(args, follow(args, "POST", f"/api/v1/hosts/{args.mac}/chap", None,
                              "volume rotate-chap"),
                 lambda r: f"host {r['host']}: new CHAP secret for {', '.join(r['exports'])} "
                           "(sent in its next boot script)")


def deploy(args) -> int:
    body = {"mac": args.mac, "from": args.source, "name": args.name, **_efi(args)}
    return _done(args, follow(args, "POST", "/api/v1/deploy", body, "deploy"),
                 lambda r: f"cloned {r['cloned_from']} -> {r['volume']}; " + _export_line(r))


def _capture_line(r: dict) -> str:
    return (f"captured {r['disk']} of host {r['host']} into volume {r['volume']} "
            f"(pool {r['pool']}): {human(r['bytes'])}, sha256 {r['sha256']} (of the chunks' "
            f"sha256s), {r['mb_s']} MB/s, {human(r['sparse_skipped'])} of zeros left sparse")


def capture(args) -> int:
    body = {"disk": args.disk, "volume": args.volume, "pool": args.pool}
    path = f"/api/v1/hosts/{urllib.parse.quote(args.mac, safe='')}/capture"
    if args.no_wait:
        job = admin_call(args, "POST", path, body, "volume capture")
        if job is None:
            return 1
        print_json(job) if args.json else print(
            f"capture job {job['id']} queued for host {args.mac}'s agent "
            f"({human(job['total'])}); follow it: netbootd volume job {job['id']} --wait")
        return 0
    return _done(args, follow(args, "POST", path, body, "volume capture"), _capture_line)


def job(args) -> int:
    view = _get(args, "/api/v1/jobs/" + urllib.parse.quote(args.id, safe=""))
    if args.wait and view["state"] == "running":
        result = follow(args, None, None, None, "job", first=view)
        if result is None:
            return 1
        view = _get(args, "/api/v1/jobs/" + urllib.parse.quote(args.id, safe=""))
    if args.json:
        print_json(view)
        return 0
    pct = f" ({view['done'] * 100 // view['total']}%)" if view.get("total") else ""
    print(f"job {view['id']}: {view['op']} {view['target']} {view['state']}, "
          f"{human(view['done'] or 0)} of {human(view['total'] or 0)}{pct}")
    if view.get("result"):
        print("result: " + (_capture_line(view["result"]) if view["op"] == "capture"
                            else ", ".join(f"{k}={v}" for k, v in view["result"].items())))
    if view.get("error"):
        print(f"error ({view['error']['status']}): {view['error']['error']}")
    return 0 if view["state"] != "failed" else 1


# -- reads -------------------------------------------------------------------------------
def _get(args, path: str):
    try:
        code, reply = ApiClient(effective_config(args), args.server).get(path)
    except Unreachable as e:
        raise SystemExit(f"netbootd: cannot reach the daemon: {e}") from None
    if code != 200:
        raise SystemExit(f"netbootd: {error_of(reply)}")
    return reply


def _sized(rows: list[dict], keys) -> list[dict]:
    return [{k: (human(v) if k in keys and isinstance(v, int) else v) for k, v in r.items()}
            for r in rows]


def list_(args) -> int:
    listing = _get(args, "/api/v1/volumes")
    if args.json:
        print_json(listing)
        return 0
    print_rows(args, _sized(listing["pools"], ("total", "used", "free", "provisioned")),
               POOL_COLS)
    print()
    print_rows(args, _sized(listing["volumes"], ("size", "used")), VOLUME_COLS)
    return 0


def show(args) -> int:
    v = _get(args, _path(args.name))
    if args.json:
        print_json(v)
        return 0
    for k in VOLUME_COLS + ["in_use"]:
        val = v.get(k)
        if k in ("size", "used") and isinstance(val, int):
            val = f"{human(val)} ({val} bytes)"
        elif k == "created":
            val = fmt_time(val)
        elif k == "in_use":
            val = "; ".join(val) or "no"
        print(f"{k + ':':<13}{'-' if val is None else val}")
    return 0


def exports(args) -> int:
    reply = _get(args, "/api/v1/exports")
    if args.json:
        print_json(reply)
        return 0
    if not reply["available"]:
        print(f"exports not available: {reply['problem']}")
    print_rows(args, reply["exports"], EXPORT_COLS)
    return 0
