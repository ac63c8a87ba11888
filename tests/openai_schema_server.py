"""A stand-in for vLLM's OpenAI-compatible chat-completions endpoint that checks every request
strictly against the documented shapes, not against what ttaeval happens to send.

Requests: the OpenAI Chat Completions request as vLLM documents it for audio models — messages whose
content is a string or a list of parts, ``text`` (``{"type": "text", "text": str}``),
``input_audio`` (``{"type": "input_audio", "input_audio": {"data": base64, "format": "wav"|"mp3"}}``)
or ``audio_url`` (``{"type": "audio_url", "audio_url": {"url": str}}``); ``max_tokens`` /
``max_completion_tokens`` >= 1, ``temperature`` in [0, 2], ``logprobs`` a bool and ``top_logprobs``
an integer in [0, 20] that needs ``logprobs: true``. An unknown field anywhere, a wrong type, a
base64 payload that is not a readable WAV: HTTP 400 with the path of the fault (as vLLM's request
validation answers), and the fault kept in ``errors``.

Replies are built with the ``openai`` package's own ``ChatCompletion`` model (the documented
response shape, ``choices[0].logprobs.content[0].top_logprobs``), from a deterministic function of
the question and the audio. The server speaks HTTP/1.1 with keep-alive and counts connections.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import soundfile as sf

REQUEST_FIELDS = {
    "model": str,
    "messages": list,
    "max_tokens": int,
    "max_completion_tokens": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "n": int,
    "stream": bool,
    "seed": int,
    "logprobs": bool,
    "top_logprobs": int,
}
ROLES = {"system", "user", "assistant"}
AUDIO_FORMATS = {"wav", "mp3"}
TOKENS = ("Yes", "No", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10")


class SchemaError(ValueError):
    pass


def _exact(obj: Any, path: str, required: dict[str, type | tuple], optional: dict | None = None) -> None:
    if not isinstance(obj, dict):
        raise SchemaError(f"{path}: expected an object, got {type(obj).__name__}")
    allowed = {**required, **(optional or {})}
    for key in obj:
        if key not in allowed:
            raise SchemaError(f"{path}.{key}: unknown field")
    for key, kind in allowed.items():
        if key not in obj:
            if key in required:
                raise SchemaError(f"{path}.{key}: required")
            continue
        value = obj[key]
        if (
            isinstance(value, bool)
            and kind is not bool
            and bool not in (kind if isinstance(kind, tuple) else ())
        ):
            raise SchemaError(f"{path}.{key}: expected {kind}, got bool")
        if not isinstance(value, kind):
            raise SchemaError(f"{path}.{key}: expected {kind}, got {type(value).__name__}")


def validate_request(body: dict) -> list[tuple[bytes, str]]:
    """Check a request; returns each user message's (audio WAV bytes, question text)."""
    if not isinstance(body, dict):
        raise SchemaError("body: expected an object")
    _exact(
        body,
        "body",
        {"model": str, "messages": list},
        {k: v for k, v in REQUEST_FIELDS.items() if k not in ("model", "messages")},
    )
    if body.get("stream"):
        raise SchemaError("body.stream: only non-streaming requests are served here")
    for key in ("max_tokens", "max_completion_tokens"):
        if key in body and body[key] < 1:
            raise SchemaError(f"body.{key}: must be >= 1")
    if "temperature" in body and not 0 <= body["temperature"] <= 2:
        raise SchemaError("body.temperature: must be in [0, 2]")
    if "top_logprobs" in body:
        if not 0 <= body["top_logprobs"] <= 20:
            raise SchemaError("body.top_logprobs: must be in [0, 20]")
        if body.get("logprobs") is not True:
            raise SchemaError("body.top_logprobs: requires logprobs: true")
    if not body["messages"]:
        raise SchemaError("body.messages: empty")
    asked = []
    for i, message in enumerate(body["messages"]):
        path = f"body.messages[{i}]"
        _exact(message, path, {"role": str, "content": (str, list)}, {"name": str})
        if message["role"] not in ROLES:
            raise SchemaError(f"{path}.role: {message['role']!r} is not one of {sorted(ROLES)}")
        if isinstance(message["content"], str):
            continue
        audio, text = None, []
        for j, part in enumerate(message["content"]):
            where = f"{path}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                _exact(part, where, {"type": str, "text": str})
                text.append(part["text"])
            elif kind == "input_audio":
                _exact(part, where, {"type": str, "input_audio": dict})
                _exact(part["input_audio"], f"{where}.input_audio", {"data": str, "format": str})
                if part["input_audio"]["format"] not in AUDIO_FORMATS:
                    raise SchemaError(f"{where}.input_audio.format: not one of {sorted(AUDIO_FORMATS)}")
                try:
                    audio = base64.b64decode(part["input_audio"]["data"], validate=True)
                except binascii.Error as exc:
                    raise SchemaError(f"{where}.input_audio.data: not base64 ({exc})") from None
                try:
                    sf.info(io.BytesIO(audio))
                except Exception as exc:
                    raise SchemaError(f"{where}.input_audio.data: not readable audio ({exc})") from None
            elif kind == "audio_url":
                _exact(part, where, {"type": str, "audio_url": dict})
                _exact(part["audio_url"], f"{where}.audio_url", {"url": str})
            else:
                raise SchemaError(f"{where}.type: {kind!r} is not a content part type")
        if message["role"] == "user":
            asked.append((audio or b"", " ".join(text)))
    return asked


def reply(body: dict, audio: bytes, question: str) -> dict:
    """A ChatCompletion (the ``openai`` package's model, validated) with top logprobs that depend
    on the question and the audio only."""
    from openai.types.chat import ChatCompletion

    seed = hashlib.sha256(audio + question.encode()).digest()
    weights = [1 + b for b in seed[: len(TOKENS)]]
    total = sum(weights)
    top = sorted(((t, math.log(w / total)) for t, w in zip(TOKENS, weights)), key=lambda x: -x[1])
    top = top[: body.get("top_logprobs", 0)]
    entry = lambda t, lp: {"token": t, "logprob": lp, "bytes": list(t.encode())}  # noqa: E731
    first = top[0] if top else ("Yes", 0.0)
    completion = ChatCompletion.model_validate({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{
            "index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": first[0]},
            "logprobs": {"content": [{**entry(*first), "top_logprobs": [entry(t, lp) for t, lp in top]}]}
            if body.get("logprobs") else None,
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })  # fmt: skip
    return completion.model_dump(mode="json", exclude_none=True)


def expected_probs(audio: bytes, question: str, top_logprobs: int) -> dict[str, float]:
    """What ``reply`` lists for a question, as probabilities."""
    body = {"model": "m", "logprobs": True, "top_logprobs": top_logprobs}
    listed = reply(body, audio, question)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {e["token"]: math.exp(e["logprob"]) for e in listed}


class SchemaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, served_model: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.served_model = served_model
        self.connections = 0
        self.requests: list[dict] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        try:
            if self.headers.get("Content-Type") != "application/json":
                raise SchemaError(f"Content-Type: {self.headers.get('Content-Type')!r}")
            body = json.loads(raw)
            asked = validate_request(body)
            if body["model"] != self.server.served_model:
                raise SchemaError(f"body.model: {body['model']!r} is not served")
            if len(asked) != 1:
                raise SchemaError(f"body.messages: {len(asked)} user turns, one expected")
        except (SchemaError, ValueError) as exc:
            with self.server.lock:
                self.server.errors.append(str(exc))
            return self._send(400, {"error": {"message": str(exc), "type": "BadRequestError", "code": 400}})
        with self.server.lock:
            self.server.requests.append(body)
        self._send(200, reply(body, *asked[0]))
