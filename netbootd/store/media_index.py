"""The media of a state dir, indexed (name, size, sha256) but not copied by a
backup, and how the media on disk differ from such an index at restore."""
from __future__ import annotations

import hashlib
import os


def default_media(state_dir: str, files_root: str | None = None,
                  discover_img: str | None = None) -> tuple[str, str]:
    """The generated media of a state dir (config.boot.files_root and
    boot.discover_initrd override the defaults, as in net/bootfiles.py)."""
    return (files_root or os.path.join(state_dir, "files"),
            discover_img or os.path.join(state_dir, "discover.img"))


def sha256_file(path: str) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def media_index(files_root: str, discover_img: str, exclude: tuple[str, ...] = ()) -> dict:
    """Name, size and sha256 of every regular file under the files root and of
    discover.img (symlinks are recorded with their target, never followed)."""
    entries = []

    def add(name: str, path: str) -> None:
        if os.path.islink(path):
            entries.append({"name": name, "path": path, "symlink": os.readlink(path)})
        elif os.path.isfile(path):
            digest, size = sha256_file(path)
            entries.append({"name": name, "path": path, "size": size, "sha256": digest})

    if os.path.isdir(files_root) and not os.path.islink(files_root):
        skip = tuple(os.path.realpath(e) + os.sep for e in exclude)
        for dirpath, dirnames, filenames in os.walk(files_root):
            dirnames.sort()
            for fn in sorted(filenames):
                path = os.path.join(dirpath, fn)
                if skip and (os.path.realpath(dirpath) + os.sep).startswith(skip):
                    continue
                add("files/" + os.path.relpath(path, files_root), path)
    add("discover.img", discover_img)
    return {"files_root": files_root, "discover_img": discover_img, "entries": entries,
            "note": "media are indexed, not copied"}


def media_differences(index: dict) -> list[str]:
    """Where the media on disk differ from a backup's index (size or presence;
    hashing every file again would make restore as slow as the media are big)."""
    out = []
    for e in index.get("entries", []):
        path = e.get("path", "")
        if "symlink" in e:
            if not os.path.islink(path) or os.readlink(path) != e["symlink"]:
                out.append(f"{path}: symlink to {e['symlink']} missing or changed")
        elif not os.path.isfile(path):
            out.append(f"{path}: missing ({e.get('size')} bytes at backup time)")
        elif os.path.getsize(path) != e.get("size"):
            out.append(f"{path}: {os.path.getsize(path)} bytes, {e.get('size')} at backup time")
    return out
