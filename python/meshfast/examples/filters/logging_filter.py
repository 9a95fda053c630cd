"""Access log lines for each request: to ``lines`` (a list, kept at most ``keep``) and, with
``stderr: true``, to stderr.

.. code-block:: yaml

    apiVersion: meshfast.io/v1alpha1
    kind: HttpFilter
    metadata:
      name: access-log
    spec:
      python: logging_filter:AccessLog
      config: {stderr: true}
"""

from __future__ import annotations

import collections
import sys

import msgspec

from meshfast.filters import HttpFilter, LogInfo, Request, Response


class AccessLog(HttpFilter):
    class Config(msgspec.Struct, forbid_unknown_fields=True):
        stderr: bool = False
        keep: int = 1000

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.lines: collections.deque[str] = collections.deque(maxlen=config.keep)

    def on_request(self, request: Request) -> Response | None:
        request.state["access-log.ua"] = request.headers.get("user-agent", "-")
        return None

    def on_log(self, request: Request, response: Response, info: LogInfo) -> None:
        query = f"?{request.query}" if request.query else ""
        line = (
            f"{request.peer} {request.method} {request.authority}{request.path}{query} "
            f"{response.status} route={request.route} cluster={request.cluster or '-'} "
            f"{info.duration_ms:.1f}ms ua={request.state.get('access-log.ua', '-')}"
        )
        if info.local_reply:
            line += f" local_reply={info.replied_by}"
        self.lines.append(line)
        if self.config.stderr:
            print(line, file=sys.stderr, flush=True)
