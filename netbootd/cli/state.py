"""`netbootd state backup|list|restore` (netbootd/store/backup.py); restore
refuses while a daemon holds the state lock."""
from __future__ import annotations

import json
import sys

from .. import config as config_mod
from .common import add_state_args, effective_config, fmt_time, table


def add_parser(sub) -> None:
    st = sub.add_parser("state", help="back up, list and restore the state (db, admin token, "
                                      "enrollment keys, config)")
    st.add_argument("action", choices=("backup", "list", "restore"))
    st.add_argument("-n", "--name", help="backup name (letters, digits, - _ .)")
    st.add_argument("--force", action="store_true", help="backup: overwrite a backup of that name")
    st.add_argument("--restore-config", action="store_true",
                    help="restore: also write the config file back to its recorded path")
    st.add_argument("--json", action="store_true", help="list: machine-readable output")
    add_state_args(st)
    st.set_defaults(func=run)


def run(args) -> int:
    from ..store import backup, lock
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
            return _list(args, backup.list_backups(cfg.state_dir))
        if args.action == "backup":
            m = backup.backup(cfg.state_dir, args.name, config_path=args.config,
                              files_root=cfg.boot.files_root,
                              discover_img=cfg.boot.discover_initrd, force=args.force)
            print(f"{m['archive']}: {m['archive_size']} bytes, schema {m['schema_version']}, "
                  f"{', '.join(e['name'] for e in m['files'])}")
            print(f"media: {m['media']['entries']} file(s) indexed, not copied")
            return 0
        r = backup.restore(cfg.state_dir, args.name, restore_config=args.restore_config)
    except lock.StateLocked as e:
        print(f"netbootd: refusing to restore: {e}", file=sys.stderr)
        return 1
    except backup.BackupError as e:
        print(f"netbootd: {e}", file=sys.stderr)
        return 1
    _restored(r)
    return 0


def _list(args, rows: list[dict]) -> int:
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        r["created"] = fmt_time(r.get("created")) if "error" not in r else "?"
        r["schema"] = r.get("schema_version", "?")
        r["note"] = r.get("error")
    print(table(rows, ["name", "created", "size", "schema", "note"]))
    return 0


def _restored(r: dict) -> None:
    print(f"restored {r['database']} (schema {r['schema_version']}) from {r['archive']}")
    if r["migrates_to"]:
        print(f"  the next start migrates it to schema {r['migrates_to']}")
    if r["safety_copy"]:
        print(f"  previous database kept as {r['safety_copy']}")
    print(f"  admin token: {r['token'] or 'not in the backup, left as is'}")
    print(f"  enrollment keys: {r.get('enroll_keys') or 'not in the backup, left as is'}")
    c = r["config"]
    if c and c["restored"]:
        print(f"  config restored to {c['path']}")
    elif c:
        print(f"  config not restored: it is {c['member']} in {r['archive']} (was {c['path']}); "
              f"pass --restore-config, or: tar -xzOf {r['archive']} {c['member']}")
    for d in r["media_differences"]:
        print(f"  media differs from the backup: {d}")
