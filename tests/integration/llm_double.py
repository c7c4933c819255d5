"""An OpenAI-compatible endpoint that misbehaves on purpose, at the HTTP level: it stands
in for a paid or remote API failing in ways the local llama.cpp server does not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from takemeter.stack import free_port


class MisbehavingLLM:
    """mode: "garbage" (answers outside the label set), "error" (HTTP 500), "slow", or
    "scripted": `answer(prompt)` gives the label for the user message, standing in for a
    hosted LLM whose answers a test must know (no logprobs, like many hosted APIs)."""

    def __init__(self, mode: str, *, delay: float = 5.0, latency: float = 0.0,
                 answer: Callable[[str], str] | None = None, host: str = "127.0.0.1") -> None:
        self.mode = mode
        self.delay = delay
        self.latency = latency  # slept by every answer: a hosted endpoint's round trip
        self.requests = 0
        self._count = threading.Lock()  # threaded server: exact counts for the tests
        app = Flask("llm-double")

        @app.post("/v1/chat/completions")
        def complete():
            with self._count:
                self.requests += 1
            body = request.get_json()
            if self.mode == "error":
                return jsonify(error={"message": "upstream exploded"}), 500
            if self.mode == "slow":
                time.sleep(self.delay)
            time.sleep(self.latency)
            label = "banana"
            if self.mode == "scripted" and answer is not None:
                user = [m["content"] for m in body["messages"] if m["role"] == "user"]
                label = answer(user[-1] if user else "")
            return jsonify({
                "id": "x", "object": "chat.completion", "created": 0, "model": "double",
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant",
                                         "content": json.dumps({"label": label})}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            })

        @app.get("/requests")
        def requests_so_far():  # for a double run in another process (the benchmarks)
            return jsonify(requests=self.requests)

        self.port = free_port()
        self.url = f"http://{host}:{self.port}/v1"
        self._server = make_server(host, self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> MisbehavingLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
