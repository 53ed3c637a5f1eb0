"""netbootd: a one-process network-boot appliance."""
try:
    from importlib.metadata import version as _version
    __version__ = _version("netbootd")
except Exception:   # running from a checkout without installing
    __version__ = "0.0.0+checkout"
