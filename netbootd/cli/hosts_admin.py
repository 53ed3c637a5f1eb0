"""The `hosts` changes: the running daemon only, with the admin token.

    assign MAC PROFILE [--kernel ...]     POST /hosts/{mac}/assign
    assign MAC sanboot --volume NAME      POST /hosts/{mac}/sanboot (export + assign)
    approve|retire MAC                    POST /hosts/{mac}/approve|retire (approve: a
                                          discovered, error or pending host)
    delete MAC                            DELETE /hosts/{mac}
    action MAC poweroff|reboot|wait       POST /hosts/{mac}/actions (for its agent)
    wipe MAC --disk D... --yes-destroy-data   the same, {"action": "wipe", "disks",
                                          "confirm": MAC}
    reset MAC                             POST /hosts/{mac}/reset (forget its agent
                                          credential)
    move MAC --account A | --no-account   PATCH /hosts/{mac} {"account": A | null}
"""
from __future__ import annotations

from .accounts import profile_args
from .client import admin_command
from .common import fail, mac_arg

ACTIONS = ("assign", "approve", "retire", "delete", "action", "wipe", "reset", "move")
AGENT_ACTIONS = ("poweroff", "reboot", "wait")
USAGE = {
    "assign": "hosts assign MAC PROFILE [options]",
    "action": "hosts action MAC poweroff|reboot|wait",
    "wipe": "hosts wipe MAC --disk NAME [--disk NAME...] --yes-destroy-data",
    "move": "hosts move MAC --account NAME | --no-account",
}


def run(args) -> int:
    mac = mac_arg(args.key, "usage: " + USAGE.get(args.action, f"hosts {args.action} MAC"))
    if mac is None:
        return 2
    if args.action == "assign" and args.arg == "sanboot" and getattr(args, "volume", None):
        # a volume of netbootd's own storage: exported to this host (its IQN and
        # CHAP) and assigned in one step, as `netbootd volume sanboot`
        from . import volumes
        args.host, args.name = mac, args.volume
        return volumes.sanboot(args)
    try:
        method, path, body, done = _request(args, mac)
    except ValueError as e:
        return fail(f"{e}\nusage: {USAGE.get(args.action, f'hosts {args.action} MAC')}", 2)
    return admin_command(args, method, path, body, args.action,
                         lambda reply: f"{mac}: {done(reply)}")


def _request(args, mac: str):
    """(method, path, body, what to print of the reply) for the change asked;
    ValueError when the command line is incomplete (nothing is sent)."""
    base = f"/api/v1/hosts/{mac}"
    a = args.action
    if a == "assign":
        if not args.arg:
            raise ValueError("hosts assign needs a PROFILE")
        return ("POST", base + "/assign", {"profile": args.arg, "args": profile_args(args)},
                lambda r: f"{r['state']} profile={r['profile']}")
    if a == "delete":
        return "DELETE", base, None, lambda r: "deleted"
    if a in ("approve", "retire"):
        return "POST", f"{base}/{a}", None, lambda r: r["state"]
    if a == "reset":
        return ("POST", base + "/reset", None,
                lambda r: "agent credential forgotten: its next registration gets a new one")
    if a == "move":
        return ("PATCH", base, {"account": _move_target(args)},
                lambda r: f"account {r.get('account') or 'none'}")
    if a == "action":
        if args.arg == "wipe":
            raise ValueError("a wipe is `hosts wipe`: it names the disks and needs "
                             "--yes-destroy-data")
        if args.arg not in AGENT_ACTIONS:
            raise ValueError(f"action: one of {', '.join(AGENT_ACTIONS)}")
        return "POST", base + "/actions", {"action": args.arg}, _queued
    # wipe
    if not args.disk:
        raise ValueError("hosts wipe needs --disk NAME (as `hosts show` lists them)")
    if not args.yes_destroy_data:
        raise ValueError(f"refusing to wipe {', '.join(args.disk)} on {mac} without "
                         "--yes-destroy-data: every byte on those disks is destroyed")
    return ("POST", base + "/actions", {"action": "wipe", "disks": args.disk, "confirm": mac},
            _queued)


def _move_target(args) -> str | None:
    if args.no_account and args.account is not None:
        raise ValueError("--account and --no-account: one or the other")
    if not args.no_account and args.account is None:
        raise ValueError("hosts move needs --account NAME or --no-account")
    return None if args.no_account else args.account


def _queued(reply: dict) -> str:
    act = reply.get("action")
    if not act:
        return "pending action cleared: its agent waits (polls again)"
    more = f" disks={','.join(act['disks'])}" if act.get("disks") else ""
    return (f"{act['action']}{more} queued (id {act['id']}); its agent picks it up at its "
            "next poll (see `netbootd events --mac`)")
