"""A misbehaving Hub for fault tests: an HTTP proxy on 127.0.0.1 in front of the olah server (tests/hubserver.py).

Every request is forwarded to olah and its answer relayed, except file downloads (`/<repo>/resolve/<rev>/<file>`)
while a fault is set:

| mode   | what a client sees on a file download                                                        |
|--------|----------------------------------------------------------------------------------------------|
| pass   | the real answer                                                                               |
| slow   | on a GET, nothing for `delay` seconds, then the answer (a file server that answers slowly)    |
| hang   | on a HEAD or a GET, nothing for `delay` seconds (not even the file's metadata comes in time)  |
| cut    | the headers and half the body of the first GET, then the server goes down (stopped mid-download) |

`stop()` closes the port (connection refused, as from a stopped server) and `start()` opens the same port again, so
huggingface_hub keeps its endpoint across a restart. `authorizations` records every Authorization header received,
so a test can prove a token was sent without reading it anywhere else.
"""

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Headers that describe one connection, not the answer: never relayed.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.mode = "pass"
        self.delay = 0.0
        self.authorizations: list[str] = []
        self.file_requests: list[str] = []  # "METHOD path" of every file download seen, in order
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Listen (on the same port as before, after a stop) and serve in a background thread."""
        if self._server is not None:
            return self.endpoint
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self.endpoint

    def stop(self) -> None:
        """Close the port: new connections are refused until start()."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "FaultProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            self._relay()

        do_HEAD = do_POST = do_GET

        def _relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            proxy.authorizations.append(self.headers.get("Authorization", ""))
            is_file = "/resolve/" in self.path
            mode = proxy.mode if is_file else "pass"
            if is_file:
                proxy.file_requests.append(f"{self.command} {self.path}")
            if mode == "hang" or (mode == "slow" and self.command == "GET"):
                time.sleep(proxy.delay)
            try:
                status, reason, headers, data = _forward(proxy, self.command, self.path, self.headers, body)
                self.send_response(status, reason)
                for key, value in headers:
                    self.send_header(key, value)
                self.end_headers()
                if self.command == "HEAD":
                    return
                if mode == "cut" and self.command == "GET":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    # The server goes down: later attempts (huggingface_hub resumes) are refused.
                    threading.Thread(target=proxy.stop, daemon=True).start()
                    return
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # the client gave up (a timeout): nothing to answer

    return Handler


def _forward(proxy: FaultProxy, method: str, path: str, request_headers, body):
    """(status, reason, headers, body) of olah's answer; redirects are pointed back at the proxy."""
    conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
    try:
        headers = {k: v for k, v in request_headers.items() if k.lower() not in _HOP}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    upstream = f"{proxy.upstream.scheme}://{proxy.upstream.netloc}"
    relayed = [
        (k, v.replace(upstream, proxy.endpoint))
        for k, v in response.getheaders()
        if k.lower() not in _HOP and k.lower() != "content-length"
    ]
    size = response.getheader("Content-Length") if method == "HEAD" else str(len(data))
    if size is not None:
        relayed.append(("Content-Length", size))
    return response.status, response.reason, relayed, data
