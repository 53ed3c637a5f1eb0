"""The readiness line, logged once every listener is up (tests wait for it)."""
from __future__ import annotations

import logging

from twisted.application import service

from ...config import Config

log = logging.getLogger("netbootd")


class Ready(service.Service):

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def startService(self) -> None:
        log.info("netbootd ready: mode=%s", self.cfg.mode)
        super().startService()
