"""A real HTTP server on 127.0.0.1 that records every POST and answers with the statuses it is
given (then 200): the webhook's receiver and the OpenTelemetry collector of the tests."""

from __future__ import annotations

import gzip
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

__all__ = ["Post", "PostRecorder"]


@attrs.frozen
class Post:
    path: str
    #: looked up in any case, as HTTP headers are
    headers: Message
    body: bytes


class PostRecorder:
    """Records each POST (gzip undone) and answers the next of ``statuses``, else 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.posts: list[Post] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                recorder.posts.append(Post(self.path, self.headers, body))
                self.send_response(recorder.statuses.pop(0) if recorder.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
