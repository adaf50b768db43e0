"""The access log: one line per request."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..escape import escaped
from ..keys import SOURCE, USER
from .forwarder import BODY_BYTES


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, user, method, path, status, bytes, seconds, and for a
    manifest or blob read who answered it ("storage": the registry's files; "registry": forwarded).

    The query string is left out (upload state tokens are long and useless in a log); no header is
    ever logged, so neither is a password. The path is logged as sent (percent-encoded) and a
    failed user name escaped (spaces too), so that no client can write a line break, a fake line
    or an extra field into the log.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %s %d %d %.3fs%s",
            request.remote,
            escaped(request.get(USER, "-"), 80),
            request.method,
            request.rel_url.raw_path,
            response.status,
            request.get(BODY_BYTES, response.content_length or 0),
            time,
            f" from={source}" if (source := request.get(SOURCE)) else "",
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


RUNNER_OPTIONS = {"access_log_class": AccessLogger, "access_log": logging.getLogger("mreg.access")}
