"""Boot media for netbootd: a pure cpio "newc" writer (cpio.py), the discover initrd
assembly (initrd.py) and, later, the BIOS+UEFI hybrid ISO.

cpio.py is pure (stdlib only, no I/O beyond the file object it is handed);
initrd.py reads the guest kernel's modules and busybox from the filesystem.
"""
