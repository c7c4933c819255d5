"""gunicorn's gthread worker with a read timeout, hardened against slow clients.

gthread hands a connection to a thread as soon as its first bytes arrive and then reads
the rest of the request with a blocking socket: a client that stalls mid-request holds
the thread, and a few dozen of them starve the service. Here:
- a request's head (request line and headers) is collected without holding a thread:
  a thread takes what has arrived and, while the head is incomplete, gives the
  connection back to gthread's poller until more comes; a head not complete within
  READ_TIMEOUT of its first byte, or silent for READ_TIMEOUT, is dropped;
- every later read of a client socket (the body) gives up after READ_TIMEOUT seconds
  (never later, whatever timeout gthread asks for); the stalled connection is closed as
  if the client had gone away, at once;
- a connection closed after its response lingers for the client's FIN (so unread request
  bytes do not turn into a reset that loses the response) on the poller, not as gthread
  does it, blocking the worker's main loop up to 2 s for each client that never closes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import selectors
import socket
import time
from collections import deque

from gunicorn import util
from gunicorn.workers.gthread import _DEFER, ThreadWorker

from backend.config import load_settings

HEAD_END = b"\r\n\r\n"
HEAD_LIMIT = 64 * 1024  # past this the parser answers (its own limits are smaller)
LINGER = 2.0  # seconds a closed connection waits for the client's FIN (gthread's too)


class _ReadTimeoutSocket(socket.socket):
    read_timeout = 30.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head = bytearray()  # bytes read ahead while waiting for a complete head
        self.head_since: float | None = None  # when the first byte of the head came
        self.stalled = False

    def setblocking(self, flag: bool) -> None:
        # gthread switches sockets to blocking before reading a request: keep a bound.
        if flag:
            self.settimeout(self.read_timeout)
        else:
            super().setblocking(False)

    def settimeout(self, value: float | None) -> None:
        # No wait on a client beyond READ_TIMEOUT, whoever asks (gthread drains a body
        # the app did not read for up to 5 s).
        if value is None or value > self.read_timeout:
            value = self.read_timeout
        super().settimeout(value)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.head:  # what the head check read ahead comes first
            data = bytes(self.head[:bufsize])
            del self.head[:bufsize]
            return data
        if self.stalled:
            return b""  # as if closed: gthread's graceful close then does not linger
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            self.stalled = True
            raise ConnectionResetError(errno.ECONNRESET, "client stalled") from None

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        data = self.recv(nbytes or len(buffer), flags)
        buffer[: len(data)] = data
        return len(data)

    def head_complete(self) -> bool | None:
        """Read what has arrived without waiting. True: the head is complete (or the
        client closed, or sent more than any head: the parser answers); False: wait for
        more; None: the head is past READ_TIMEOUT, drop the connection."""
        timeout = self.gettimeout()
        super().setblocking(False)
        try:
            while len(self.head) < HEAD_LIMIT:
                try:
                    chunk = super().recv(HEAD_LIMIT)
                except BlockingIOError:
                    break
                except OSError:
                    return True  # the parser meets the same error and closes
                if not chunk:
                    return True
                self.head += chunk
        finally:
            self.settimeout(timeout)
        if HEAD_END in self.head or len(self.head) >= HEAD_LIMIT:
            return True
        now = time.monotonic()
        if self.head and self.head_since is None:
            self.head_since = now
        if self.head_since is not None and now - self.head_since > self.read_timeout:
            return None
        return False


class ReadTimeoutWorker(ThreadWorker):
    def init_process(self) -> None:
        _ReadTimeoutSocket.read_timeout = load_settings().read_timeout
        self.lingering: deque[tuple[float, socket.socket]] = deque()  # (until, socket)
        super().init_process()

    def handle(self, conn):
        if not isinstance(conn.sock, _ReadTimeoutSocket):
            raw = conn.sock
            timed = _ReadTimeoutSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
            timed.setblocking(True)
            conn.sock = timed
            conn.close = functools.partial(self.close_connection, conn)
        # Before a request (a new connection, or a kept-alive one with nothing read
        # ahead): no thread waits for its head. TLS and HTTP/2 go to gthread as they are.
        parser = conn.parser
        if (
            not self.cfg.is_ssl
            and not conn.is_http2
            and (parser is None or not parser.unreader.buf.getvalue())
        ):
            complete = conn.sock.head_complete()
            if complete is None:
                conn.sock.stalled = True
                return False  # closed at once, see _ReadTimeoutSocket.recv
            if not complete:
                return _DEFER  # back to the poller until more arrives
            conn.sock.head_since = None
            conn.data_ready = True  # in our buffer now: gthread must not wait for it
        keepalive = super().handle(conn)
        if keepalive and keepalive is not _DEFER and conn.sock.head:
            # A pipelined request read ahead: hand it to the parser, where gthread looks
            # for one before waiting on the socket again.
            unreader = conn.parser.unreader
            unreader.unread(unreader.take_buffered() + bytes(conn.sock.head))
            conn.sock.head.clear()
        return keepalive

    def finish_request(self, conn, fs) -> None:
        super().finish_request(conn, fs)
        # A connection given back to wait for its head may stay silent READ_TIMEOUT
        # (gthread would close it after its keepalive seconds). All pending connections
        # get the same bound, so gthread's queue of them stays in deadline order.
        if self.pending_conns and self.pending_conns[-1] is conn:
            conn.timeout = time.monotonic() + _ReadTimeoutSocket.read_timeout

    # gthread calls conn.close on its main loop only (finish_request, murder_*).
    def close_connection(self, conn, graceful: bool = False) -> None:
        sock = conn.sock
        if not graceful or sock.stalled:
            util.close(sock)
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            socket.socket.setblocking(sock, False)
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.lingering.append((time.monotonic() + LINGER, sock))

    def _drain(self, sock: socket.socket) -> None:
        try:
            data = socket.socket.recv(sock, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client closed: done lingering
            self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        # Closed already: its fileno is -1, so no other connection's is unregistered.
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        util.close(sock)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.lingering and self.lingering[0][0] <= now:
            self._end_linger(self.lingering.popleft()[1])
