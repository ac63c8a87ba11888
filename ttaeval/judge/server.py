"""``ttaeval judge serve`` — a local judge on the OpenAI chat-completions subset ``judge:http`` speaks.

One judge model (a Qwen2-Audio or Qwen2.5-Omni folder, loaded by ``judge:hf``'s code) answers
``POST /v1/chat/completions`` for clients on this machine: trainer processes that share one judge,
and the tests of ``judge:http``. ``GET /v1/models`` and ``GET /health`` are there too.

The subset: ``messages`` with text parts and exactly one audio part (``input_audio`` with base64
data, or an ``audio_url`` holding a ``data:`` URL), any format soundfile reads, resampled to 16 kHz
mono; ``max_tokens`` 1 (the server only computes the first answer token, greedily); ``logprobs``
with ``top_logprobs`` up to the vocabulary size. The reply's ``message.content`` is the most likely
token's text and ``logprobs.content[0].top_logprobs`` lists the top tokens, decoded to text, with
their log-probabilities (-9999.0 for a probability that underflows to 0, as vLLM writes it).

Concurrent requests are grouped into one forward pass (a worker thread takes whatever is queued, up
to ``max_batch``), so the numbers are those of ``judge:hf``'s batched calls. The server has no
authentication unless ``api_key`` is set, so it binds to loopback addresses only unless told
otherwise. Fault injection for tests of clients is in ``faults``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import ipaddress
import json
import logging
import math
import queue
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

from ttaeval.io.audio import resample, to_channels
from ttaeval.judge.faults import Fault, FaultPlan
from ttaeval.judge.hf import HFJudgeScorer

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MAX_BODY = 64 << 20
"""Largest request body accepted (bytes): 64 MiB holds several minutes of float WAV as base64."""
UNDERFLOW_LOGPROB = -9999.0


class RequestError(Exception):
    """A request the server refuses: the HTTP status and the message sent back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reply:
    """The first answer token: the most likely token's text, and the top tokens with log-probs."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...]


class _ServedJudge(HFJudgeScorer):
    """``judge:hf`` whose "questions" are chat texts the server has already rendered from messages."""

    def chat(self, question: str) -> str:
        return question

    def render(self, messages: list[dict]) -> str:
        """The chat-template text of a conversation with one audio part (as ``HFJudgeScorer.chat``)."""
        return self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class JudgeEngine:
    """The model behind the server: one worker thread answers the queued requests in micro-batches."""

    def __init__(
        self, model: Path, *, device: str = "cpu", max_batch: int = 16, batch_wait: float = 0.002
    ) -> None:
        self.judge = _ServedJudge(model=Path(model), device=device, question_batch=max_batch)
        self.max_batch = max(1, max_batch)
        self.batch_wait = batch_wait
        self._tokenizer = self.judge._processor.tokenizer
        self._texts: dict[int, str] = {}
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="judge-engine", daemon=True)
        self._worker.start()

    def submit(self, audio: np.ndarray, messages: list[dict], top_k: int) -> Future[Reply]:
        """Queue one question (16 kHz mono float32 audio, messages with one audio part)."""
        future: Future[Reply] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError("the judge engine is closed"))
            else:
                self._queue.put((audio, messages, top_k, future))
        return future

    def close(self) -> None:
        """Stop the worker after the batch in progress; requests still queued fail (none waits forever)."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._worker.join(timeout=30)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[3].set_exception(RuntimeError("the judge engine is closed"))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            batch = [item]
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self._answer(batch)

    def _answer(self, batch: list) -> None:
        ready = []
        for audio, messages, top_k, future in batch:
            try:
                ready.append((audio, self.judge.render(messages), top_k, future))
            except Exception as exc:  # a template error concerns this request only
                future.set_exception(exc)
        try:
            probs = self.judge.next_token_probs([r[0] for r in ready], [r[1] for r in ready])
        except Exception as exc:
            if len(ready) > 1:  # isolate the request that broke the batch
                for r in ready:
                    self._answer_one(*r)
            elif ready:
                ready[0][3].set_exception(exc)
            return
        for (_, _, top_k, future), p in zip(ready, probs):
            future.set_result(self._reply(p, top_k))

    def _answer_one(self, audio, text, top_k, future) -> None:
        try:
            (p,) = self.judge.next_token_probs([audio], [text])
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(self._reply(p, top_k))

    def _reply(self, p: np.ndarray, top_k: int) -> Reply:
        k = min(max(top_k, 1), p.size)
        idx = np.argpartition(-p, k - 1)[:k]
        idx = idx[np.argsort(-p[idx], kind="stable")]
        top = tuple((self._text(int(i)), _logprob(p[i])) for i in idx)
        return Reply(top[0][0], top[0][1], top[:top_k])

    def _text(self, token_id: int) -> str:
        if token_id not in self._texts:
            self._texts[token_id] = self._tokenizer.decode([token_id])
        return self._texts[token_id]


def _logprob(p: float) -> float:
    return math.log(float(p)) if p > 0 else UNDERFLOW_LOGPROB


# -- requests ----------------------------------------------------------------------------------------


@dataclass
class ChatRequest:
    """A parsed, validated chat-completions request."""

    audio: np.ndarray
    messages: list[dict]
    logprobs: bool
    top_logprobs: int


def parse_request(body: bytes, served_name: str) -> ChatRequest:
    """Validate a request body against the subset served; ``RequestError`` names what is wrong."""
    try:
        req = json.loads(body)
    except ValueError as exc:
        raise RequestError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(req, dict):
        raise RequestError(400, "the body must be a JSON object")
    if req.get("model") != served_name:
        message = f"the model {req.get('model')!r} is not served here; this server serves {served_name!r}"
        raise RequestError(404, message)
    for name, allowed in (("max_tokens", 1), ("max_completion_tokens", 1), ("n", 1)):
        if req.get(name) not in (None, allowed):
            raise RequestError(400, f"{name} must be 1: this server computes the first answer token only")
    if req.get("temperature") not in (None, 0, 0.0):
        raise RequestError(400, "temperature must be 0: this server answers greedily")
    if req.get("stream"):
        raise RequestError(400, "stream is not supported")
    logprobs = bool(req.get("logprobs"))
    top = req.get("top_logprobs") or 0
    if not isinstance(top, int) or top < 0 or (top and not logprobs):
        raise RequestError(400, "top_logprobs must be an integer >= 0, and needs logprobs: true")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list")
    audio: list[np.ndarray] = []
    conversation = [_message(m, i, audio) for i, m in enumerate(messages)]
    if len(audio) != 1:
        raise RequestError(400, f"a judge request needs exactly one audio part; got {len(audio)}")
    return ChatRequest(audio[0], conversation, logprobs, top)


def _message(message: object, index: int, audio: list[np.ndarray]) -> dict:
    """One message as the chat template wants it; audio parts decoded into ``audio``."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise RequestError(400, f"messages[{index}] must be an object with a role")
    content = message.get("content")
    if isinstance(content, str):
        return {"role": message["role"], "content": content}
    if not isinstance(content, list):
        raise RequestError(400, f"messages[{index}].content must be a string or a list of parts")
    parts = []
    for j, part in enumerate(content):
        where = f"messages[{index}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("input_audio", "audio_url"):
            audio.append(_decode_audio(part, where))
            parts.append({"type": "audio", "audio_url": "clip"})
        else:
            raise RequestError(400, f"{where}: expected a text, input_audio or audio_url part")
    return {"role": message["role"], "content": parts}


def _decode_audio(part: dict, where: str) -> np.ndarray:
    try:
        if part["type"] == "input_audio":
            data = part["input_audio"]["data"]
        else:
            url = part["audio_url"]["url"]
            if not url.startswith("data:") or ";base64," not in url:
                raise RequestError(400, f"{where}: only data: URLs (base64) are served, not remote audio")
            data = url.split(";base64,", 1)[1]
        raw = base64.b64decode(data, validate=True)
        samples, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except RequestError:
        raise
    except (KeyError, TypeError, AttributeError, binascii.Error, sf.LibsndfileError, RuntimeError) as exc:
        raise RequestError(400, f"{where}: cannot read the audio ({type(exc).__name__}: {exc})") from None
    audio = resample(to_channels(np.ascontiguousarray(samples.T), 1), rate, SAMPLE_RATE)[0]
    if audio.size == 0 or not np.isfinite(audio).all():
        raise RequestError(400, f"{where}: the audio is empty or holds NaN/Inf samples")
    return audio


def completion(served_name: str, reply: Reply, logprobs: bool) -> dict:
    """The OpenAI-shaped body for one first-token answer."""
    choice: dict = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.text},
        "finish_reason": "length",
        "logprobs": None,
    }
    if logprobs:
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in reply.top]
        first = {"token": reply.text, "logprob": reply.logprob, "bytes": list(reply.text.encode())}
        choice["logprobs"] = {"content": [{**first, "top_logprobs": top}]}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_name,
        "choices": [choice],
    }


# -- the HTTP server ---------------------------------------------------------------------------------


def check_host(host: str, allow_remote: bool = False) -> None:
    """Refuse a non-loopback address unless ``allow_remote``: the server has no authentication of its own."""
    if host == "localhost" or allow_remote:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to serve the judge on {host}: it is reachable from other machines and the server "
            "has no authentication by default; use 127.0.0.1, or pass --allow-remote (with --api-key-env)"
        )


class JudgeHTTPServer(ThreadingHTTPServer):
    """The HTTP front of a ``JudgeEngine``. ``start()`` serves from a background thread (tests)."""

    daemon_threads = True

    def __init__(
        self,
        engine: JudgeEngine,
        *,
        served_name: str,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        faults: Sequence[Fault] = (),
        allow_remote: bool = False,
    ) -> None:
        check_host(host, allow_remote)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.engine = engine
        self.served_name = served_name
        self._api_key = api_key
        self.faults = FaultPlan(faults)
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    def __repr__(self) -> str:
        return f"JudgeHTTPServer({self.url!r}, served_name={self.served_name!r})"

    @property
    def url(self) -> str:
        """The base URL clients use (``judge:http,url=...``)."""
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def set_faults(self, faults: Sequence[Fault]) -> FaultPlan:
        """Replace the fault schedule (request numbering starts again at 1)."""
        self.faults = FaultPlan(faults)
        return self.faults

    def authorized(self, header: str | None) -> bool:
        if not self._api_key:
            return True
        return header is not None and hmac.compare_digest(header.encode(), f"Bearer {self._api_key}".encode())

    def start(self) -> JudgeHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="judge-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (if started in the background) and release the port; the engine stays up."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        log.exception("judge server: error while handling a request from %s", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server: JudgeHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds a silent client may hold a connection (and its thread)

    def log_message(self, format: str, *args) -> None:  # the request line only; headers are never logged
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self._json(200, {"status": "ok"})
        elif self.path.rstrip("/") == "/v1/models":
            model = {"id": self.server.served_name, "object": "model", "created": 0, "owned_by": "ttaeval"}
            self._json(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self._error(413, f"Content-Length must be a size up to {MAX_BODY} bytes")
        body = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        if not self.server.authorized(self.headers.get("Authorization")):
            message = "missing or wrong API key (Authorization: Bearer ...)"
            return self._error(401, message, "authentication_error")
        try:
            request = parse_request(body, self.server.served_name)
        except RequestError as exc:
            return self._error(exc.status, str(exc))
        fault = self.server.faults.draw()
        if fault is not None:
            log.info("judge server: injecting fault %s", fault.kind)
            if self._inject(fault):
                return
        future = self.server.engine.submit(request.audio, request.messages, request.top_logprobs)
        try:
            reply = future.result()
        except Exception as exc:
            log.exception("judge server: the model failed on a request")
            return self._error(500, f"the judge failed: {type(exc).__name__}: {exc}", "server_error")
        out = completion(self.server.served_name, reply, request.logprobs)
        if fault is not None and fault.kind == "no-logprobs":
            out["choices"][0]["logprobs"] = None
        self._json(200, out)

    def _inject(self, fault: Fault) -> bool:
        """Apply a fault; True when the reply is already sent (or the connection gone)."""
        kind = fault.kind
        if kind == "delay":
            time.sleep(fault.seconds)
            return False
        if kind == "no-logprobs":
            return False
        if kind == "reset":  # SO_LINGER 0: close() sends a TCP reset instead of a clean end
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif kind == "http500":
            self._error(500, "injected fault: internal error", "server_error")
        elif kind in ("http503", "http429"):
            status = 503 if kind == "http503" else 429
            headers = {"Retry-After": f"{fault.retry_after:g}"}
            self._error(status, f"injected fault: HTTP {status}", "server_error", headers)
        elif kind == "malformed":
            self._send(200, b'{"id": "chatcmpl-fault", "object": "chat.completion", "choices": [{"mess')
        elif kind == "not-yes-no":
            maybe = Reply("Maybe", -0.01, (("Maybe", -0.01), ("Perhaps", -4.7)))
            self._json(200, completion(self.server.served_name, maybe, logprobs=True))
        return True

    def _error(self, status: int, message: str, kind: str = "invalid_request_error", headers=None) -> None:
        self._json(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. timed out)
            log.debug("judge server: the client left before the reply")
            self.close_connection = True


def serve(
    engine: JudgeEngine,
    *,
    served_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    faults: Sequence[Fault] = (),
    allow_remote: bool = False,
    on_ready: Callable[[JudgeHTTPServer], None] | None = None,
) -> None:
    """Serve ``engine`` until interrupted (Ctrl-C, or SIGTERM from the main thread), then close it;
    ``on_ready(server)`` runs once bound."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        server = JudgeHTTPServer(
            engine,
            served_name=served_name,
            host=host,
            port=port,
            api_key=api_key,
            faults=faults,
            allow_remote=allow_remote,
        )
        with server, contextlib.suppress(KeyboardInterrupt):
            if on_ready is not None:
                on_ready(server)
            server.serve_forever()
    finally:
        engine.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
