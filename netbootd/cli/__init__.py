"""The command line: one module per command group, each adding its subparser.

    serve      serve.py     options only; __main__ runs the daemon (the reactor is its)
    config     config.py    config check
    lab        lab.py       a VM booted against netbootd in namespaces
    token      admin.py     the admin token
    accounts   accounts.py  create/list/show/set/delete (list/show read)
    tokens     tokens.py    enrollment tokens: create (shown once)/list/revoke/rotate-key
    state      state.py     backup / list / restore
    hosts      hosts.py     list/show (read; show: hosts_show.py) and assign/approve/
                            retire/delete/action/wipe/reset/move (API, hosts_admin.py)
    leases     leases.py    list/show (read)
    events     events.py    list, -f (read)
    initrd     initrd.py    build the discover initrd (may fetch busybox-static)
    volume     volumes.py   create/resize/snapshot/clone/delete/list/show/sanboot/unexport/
    deploy                  exports (storage jobs, followed with a progress bar); deploy
    media      media.py     build an account's boot image (iso_builder/media.py)
    tls        tls.py       the HTTPS certificate: selfsigned, pin
    net        net.py       show (interfaces: API, else netlink); bridge add/del (pyroute2)
    vnet       vnet.py      networks: create/update (templates), list/show (read),
                            addleases/rmleases/delete (API)

Commands that call the daemon use client.ApiClient; the read commands fall
back to the store's read methods (reads.py) and print the same columns.
A new command group: a module with add_parser(sub) that sets `func`, and one
line in GROUPS.
"""
from __future__ import annotations

import argparse

from . import (accounts, admin, config, events, hosts, initrd, lab, leases, media, serve, state,
               tokens, volumes)
from . import tls as tls_cli
from . import net as net_cli
from . import vnet as vnet_cli
from .common import effective_config

GROUPS = (serve, config, lab, admin, accounts, tokens, state, hosts, leases, events, initrd,
          volumes, media, tls_cli, net_cli, vnet_cli)

__all__ = ["build_parser", "effective_config", "run"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netbootd", description="network-boot appliance")
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return p


def run(args) -> int:
    """Every command but serve (args.func is None for it: __main__ runs it)."""
    return args.func(args)
