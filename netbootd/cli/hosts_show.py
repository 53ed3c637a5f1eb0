"""`hosts show MAC` for a human: the host's row (the columns of `hosts list`),
its account and agent, its hardware from the latest inventory, its timeline.
The same from the API path and the store path.

Inventory strings come from the host (policy/inventory.py keeps any script
and replaces control characters); common.cell replaces them again, so
nothing a host sends can drive the admin's terminal."""
from __future__ import annotations

from ..web import human_bytes, hw_glance
from .common import EVENT_COLS, HOST_COLS, facts, fmt_time, print_json, print_rows, table

DISK_COLS = ["disk", "size", "model", "serial", "rotational", "transport"]
NIC_COLS = ["nic", "mac", "driver", "link", "speed"]


def show_host(args, host: dict, timeline: list, inventory: dict | None) -> int:
    """One host (a view as the API shows it), then its timeline (oldest first)."""
    if args.json:
        print_json(dict(host, timeline=timeline, inventory=inventory))
        return 0
    host.pop("last_event", None)
    print_rows(args, [host], HOST_COLS)
    print()
    print(facts(agent_facts(host)))
    print()
    print(hardware(inventory))
    print()
    print_rows(args, timeline, EVENT_COLS)
    return 0


def agent_facts(h: dict) -> list[tuple[str, object]]:
    ids = ", ".join(f"{k}={v}" for k, v in (h.get("ids") or []) if k != "mac" or v != h["mac"])
    return [("account", h.get("account") or "none"),
            ("credential", "yes (its agent holds a secret)" if h.get("credential")
             else "no"),
            ("identifiers", f"mac={h['mac']}" + (", " + ids if ids else "")),
            ("pending action", action_text(h.get("action"))),
            ("hardware", hw_glance(h.get("hw")) or "no inventory yet")]


def action_text(act: dict | None) -> str:
    if not act:
        return "none"
    more = " disks=" + ",".join(act["disks"]) if act.get("disks") else ""
    return f"{act.get('action')}{more} (id {act.get('id')})"


def _join(*parts) -> str | None:
    out = " ".join(str(p) for p in parts if p not in (None, ""))
    return out or None


def hardware(inventory: dict | None) -> str:
    """The latest inventory document ({ts, doc}) at a glance."""
    if not inventory:
        return "hardware: no inventory (the agent posts one when the host boots it)"
    doc = inventory.get("doc") or {}
    cpu, dmi = doc.get("cpu") or {}, doc.get("dmi") or {}
    system, board, bios = (dmi.get(k) or {} for k in ("system", "board", "bios"))
    counts = ", ".join(f"{cpu[k]} {k}" for k in ("sockets", "cores", "threads")
                       if cpu.get(k) is not None)
    sb = doc.get("secure_boot")
    lines = [f"hardware (inventory of {fmt_time(inventory.get('ts'))}):", facts([
        ("cpu", _join(cpu.get("model"), f"({counts})" if counts else None)),
        ("memory", human_bytes((doc.get("memory") or {}).get("bytes"))),
        ("system", _join(system.get("vendor"), system.get("product"),
                         f"serial {system['serial']}" if system.get("serial") else None)),
        ("system uuid", system.get("uuid")),
        ("board", _join(board.get("vendor"), board.get("product"),
                        f"serial {board['serial']}" if board.get("serial") else None)),
        ("bios", _join(bios.get("vendor"), bios.get("version"),
                       f"({bios['date']})" if bios.get("date") else None)),
        ("firmware", doc.get("firmware")),
        ("secure boot", "unknown" if sb is None else "on" if sb else "off"),
    ], "  ")]
    disks = [dict(d, disk=d.get("name"), size=human_bytes(d.get("bytes"))) for d in doc.get("disks") or []]
    nics = [dict(n, nic=n.get("name"), speed=f"{n['speed']} Mb/s" if n.get("speed") else None)
            for n in doc.get("nics") or []]
    lines += ["", table(disks, DISK_COLS) if disks else "no disks reported",
              "", table(nics, NIC_COLS) if nics else "no NICs reported"]
    return "\n".join(lines)
