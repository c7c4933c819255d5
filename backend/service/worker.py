"""gunicorn's gthread worker with a read timeout.

gthread hands a connection to a thread as soon as its first bytes arrive and then reads
the rest of the request with a blocking socket: a client that stalls mid-request holds
the thread for good, and a few dozen of them starve the service. Here every read of a
client socket gives up after READ_TIMEOUT seconds; the stalled connection is closed as if
the client had gone away.
"""

from __future__ import annotations

import errno
import socket

from gunicorn.workers.gthread import ThreadWorker

from backend.config import load_settings


class _ReadTimeoutSocket(socket.socket):
    read_timeout = 30.0

    def setblocking(self, flag: bool) -> None:
        # gthread switches sockets to blocking before reading a request: keep a bound.
        if flag:
            self.settimeout(self.read_timeout)
        else:
            super().setblocking(False)

    def recv(self, *args, **kwargs):
        try:
            return super().recv(*args, **kwargs)
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "client stalled") from None

    def recv_into(self, *args, **kwargs):
        try:
            return super().recv_into(*args, **kwargs)
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "client stalled") from None


class ReadTimeoutWorker(ThreadWorker):
    def init_process(self) -> None:
        _ReadTimeoutSocket.read_timeout = load_settings().read_timeout
        super().init_process()

    def handle(self, conn):
        if not isinstance(conn.sock, _ReadTimeoutSocket):
            raw = conn.sock
            timed = _ReadTimeoutSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
            timed.setblocking(True)
            conn.sock = timed
        return super().handle(conn)
