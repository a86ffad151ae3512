"""Scenario 6: many idle keep-alive client connections held open against one balancer.

Every connection sends one `GET /` and reads its whole response, so it is established at the
HTTP level (the balancer has read a request on it and answered), and then stays idle. Opening
goes in batches over non-blocking sockets, so 10,000 connections take about a second and
a balancer's idle timeout (rondo's is 5 s) does not close the first ones before the last are
open; `still_open()` tells how many the balancer kept.
"""

import selectors
import socket
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: rondo-bench\r\n\r\n"


class IdleConnections:
    def __init__(self, port, count, batch=500, timeout=30.0):
        self.socks = []
        try:
            for start in range(0, count, batch):
                self._open_batch(port, min(batch, count - start), timeout)
        except BaseException:
            self.close()
            raise

    def _open_batch(self, port, n, timeout):
        sel = selectors.DefaultSelector()
        pending = {}
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.socks.append(s)
            pending[s] = bytearray()
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{len(pending)} of {n} connections got no response within {timeout:.0f}s"
                )
            for key, events in sel.select(left):
                s = key.fileobj
                if events & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise RuntimeError(f"connect to 127.0.0.1:{port} failed: errno {err}")
                    s.send(REQUEST)  # small enough for an empty send buffer
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the balancer closed a connection before answering")
                buf = pending[s]
                buf += chunk
                if _complete(buf):
                    if not buf.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(f"unexpected response: {bytes(buf[:80])!r}")
                    sel.unregister(s)
                    del pending[s]
        sel.close()

    def still_open(self):
        """How many of the connections the balancer has not closed (no EOF pending on them)."""
        sel = selectors.DefaultSelector()
        for s in self.socks:
            sel.register(s, selectors.EVENT_READ)
        closed = len(sel.select(0))
        sel.close()
        return len(self.socks) - closed

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


def _complete(buf):
    """Whether `buf` holds a whole response with a Content-Length body."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= end + 4 + length
