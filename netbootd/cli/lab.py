"""`netbootd lab`: boot a qemu VM against netbootd in private namespaces
(netbootd/lab/vm.py does the work)."""
from __future__ import annotations


def add_parser(sub) -> None:
    lab = sub.add_parser("lab", help="boot a qemu VM against netbootd in private namespaces")
    lab.add_argument("--uefi", action="store_true", help="OVMF UEFI PXE instead of SeaBIOS+iPXE")
    lab.add_argument("--http-boot", action="store_true", help="OVMF UEFI HTTP Boot")
    lab.add_argument("--proxy", action="store_true",
                     help="proxyDHCP mode beside a dnsmasq that hands out addresses")
    lab.add_argument("--nic", default="virtio-net-pci", choices=("virtio-net-pci", "e1000"))
    lab.add_argument("--timeout", type=float, default=300.0)
    lab.set_defaults(func=run)


def run(args) -> int:
    from ..lab import vm
    return vm.main(args)
