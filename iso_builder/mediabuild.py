"""An account's boot medium of either flavour (issue 12): the checks before a
build and the build (iso_builder/media.py: full; media_net.py: net)."""
from __future__ import annotations

from . import initrd as initrd_mod
from .media import FLAVOURS, MediaError, build_full_image, check_inputs, medium_config
from .media_net import build_net_image, check_net_inputs, medium_ipxe


def preflight(flavour: str, **settings) -> None:
    """Every Debian input of the flavour and the medium's settings (as
    medium_values; a placeholder token is fine), checked without building:
    MediaError naming the package or the field."""
    if flavour not in FLAVOURS:
        raise MediaError(f"flavour: {flavour!r} is not one of {', '.join(FLAVOURS)}")
    medium_config(**settings)
    if flavour == "net":
        medium_ipxe(**settings)
        check_net_inputs()
    else:
        try:
            check_inputs(initrd_mod.default_kernel_version())
        except initrd_mod.InitrdError as e:
            raise MediaError(str(e)) from None


def build_image(out_path, *, flavour: str = "full", **kw) -> dict:
    """The `full` (build_full_image) or `net` (media_net.build_net_image) image."""
    if flavour == "full":
        return build_full_image(out_path, **kw)
    if flavour == "net":
        return build_net_image(out_path, **kw)
    raise MediaError(f"flavour: {flavour!r} is not one of {', '.join(FLAVOURS)}")
