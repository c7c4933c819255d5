"""An OpenAI-compatible endpoint that misbehaves on purpose, at the HTTP level: it stands
in for a paid or remote API failing in ways the local llama.cpp server does not.

It keeps connections alive, as hosted APIs and vLLM do: a stand-in that closes each one
makes every client pay a new connection a call, which a real endpoint never charges."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from takemeter.stack import free_port


class MisbehavingLLM:
    """mode: "garbage" (answers outside the label set), "error" (HTTP 500), "slow", or
    "scripted": `answer(prompt)` gives the label for the user message, standing in for a
    hosted LLM whose answers a test must know (no logprobs, like many hosted APIs)."""

    def __init__(
        self,
        mode: str,
        *,
        delay: float = 5.0,
        latency: float = 0.0,
        answer: Callable[[str], str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.mode = mode
        self.delay = delay
        self.latency = latency  # slept by every answer: a hosted endpoint's round trip
        self.answer = answer
        self.requests = 0
        self._count = threading.Lock()  # threaded server: exact counts for the tests
        self.port = free_port()
        self.url = f"http://{host}:{self.port}/v1"
        self._server = _Server((host, self.port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def complete(self, body: dict) -> tuple[int, dict]:
        """(status, JSON body) for one chat completion request."""
        with self._count:
            self.requests += 1
        if self.mode == "error":
            return 500, {"error": {"message": "upstream exploded"}}
        if self.mode == "slow":
            time.sleep(self.delay)
        time.sleep(self.latency)
        label = "banana"
        if self.mode == "scripted" and self.answer is not None:
            user = [m["content"] for m in body.get("messages", []) if m["role"] == "user"]
            label = self.answer(user[-1] if user else "")
        return 200, {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "double",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": json.dumps({"label": label})},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    def __enter__(self) -> MisbehavingLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an idle kept-alive connection holds up no exit
    request_queue_size = 128  # a client opening its whole pool at once is not refused


def _handler_for(llm: MisbehavingLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        # Headers and body go out in two writes: without this, the client's delayed ACK
        # holds the body back ~40 ms on every kept-alive request.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            except (TypeError, ValueError) as exc:
                return self._send(400, {"error": {"message": f"bad JSON body: {exc}"}})
            self._send(*llm.complete(body))

        def do_GET(self) -> None:
            if self.path != "/requests":  # for a double run in another process
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            self._send(200, {"requests": llm.requests})

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a line per LLM request

        def handle(self) -> None:
            with contextlib.suppress(ConnectionError):  # the client gave up (its timeout)
                super().handle()

    return Handler
