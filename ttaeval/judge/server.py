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
authentication unless ``api_key`` is set (then ``Authorization: Bearer KEY``, the scheme in any case,
for everything but ``GET /health``), so it binds to loopback addresses only unless told otherwise,
and warns on stderr when told to serve other machines without a key. Fault injection for tests of
clients is in ``faults``.

Every request's work is bounded before it is done (``ServerLimits``): the body needs a
Content-Length (chunked bodies get 411), the audio's duration, sample rate and channels are read from
its header before it is decoded or resampled, the prompt's length is capped in characters, and the
judge refuses a chat text longer than its context in tokens (``judge:hf``'s ``max_text_tokens``).
Refusals are 400 (malformed or unsupported) or 413 (too large), with the reason in the JSON error.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import gc
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
import sys
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


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server, checked before the work is done (413: too large, 400:
    out of range): a small WAV claiming a very low rate would be resampled to 16 kHz without bound,
    and a very long prompt would grow the judge's attention memory without bound."""

    max_body_bytes: int = MAX_BODY
    """Largest request body (Content-Length), in bytes."""
    max_audio_seconds: float = 60.0
    """Longest clip, read from the audio's header (frames / sample rate) before it is decoded; the
    judges hear at most 30 s (Qwen2-Audio; judge-mini 4 s) anyway."""
    min_sample_rate: int = 1_000
    """Lowest sample rate accepted, in Hz: resampling to 16 kHz multiplies the samples by 16000/rate."""
    max_sample_rate: int = 192_000
    """Highest sample rate accepted, in Hz."""
    max_channels: int = 8
    """Most channels in a clip (they are averaged to mono)."""
    max_prompt_chars: int = 2_000
    """Longest prompt: the characters of the roles and texts of all messages together. The judge
    also refuses a chat text longer than its context in tokens (``judge:hf``'s ``max_text_tokens``)."""
    max_messages: int = 32
    """Most messages in a request, and most content parts in one message."""

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.min_sample_rate, self.max_channels, self.max_messages) < 1:
            raise ValueError(f"server limits must be >= 1: {self}")
        if not self.max_audio_seconds > 0 or self.max_sample_rate < self.min_sample_rate:
            raise ValueError(f"server limits need max_audio_seconds > 0, min <= max sample rate: {self}")
        if self.max_prompt_chars < 0:
            raise ValueError(f"server limits need max_prompt_chars >= 0: {self}")


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
        self,
        model: Path,
        *,
        device: str = "cpu",
        max_batch: int = 16,
        batch_wait: float = 0.002,
        max_text_tokens: int = 0,
    ) -> None:
        self.judge = _ServedJudge(
            model=Path(model), device=device, question_batch=max_batch, max_text_tokens=max_text_tokens
        )
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
                text = self.judge.render(messages)
                too_long = self.judge.refusal(text)
            except Exception as exc:  # a template error concerns this request only
                future.set_exception(exc)
                continue
            if too_long:  # longer than the judge's context: never run (its memory grows as the square)
                future.set_exception(RequestError(413, too_long))
            else:
                ready.append((audio, text, top_k, future))
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


def parse_request(body: bytes, served_name: str, limits: ServerLimits | None = None) -> ChatRequest:
    """Validate a request body against the subset served and ``limits``; ``RequestError`` names what
    is wrong. The prompt's length and the audio's header are checked before the audio is decoded."""
    limits = limits or ServerLimits()
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
    _check_size(messages, limits)
    audio: list[np.ndarray] = []
    conversation = [_message(m, i, audio, limits) for i, m in enumerate(messages)]
    if len(audio) != 1:
        raise RequestError(400, f"a judge request needs exactly one audio part; got {len(audio)}")
    return ChatRequest(audio[0], conversation, logprobs, top)


def _check_size(messages: list, limits: ServerLimits) -> None:
    """413 for too many messages or parts, or a prompt (roles and texts) over ``max_prompt_chars``;
    entries of the wrong shape are left to ``_message`` to name."""
    if len(messages) > limits.max_messages:
        raise RequestError(
            413, f"the request has {len(messages)} messages; at most {limits.max_messages} are accepted"
        )
    chars = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        for value in (message.get("role"), message.get("content")):
            chars += len(value) if isinstance(value, str) else 0
        content = message.get("content")
        if isinstance(content, list):
            if len(content) > limits.max_messages:
                raise RequestError(
                    413,
                    f"messages[{i}] has {len(content)} content parts; at most {limits.max_messages} "
                    "are accepted",
                )
            texts = (
                part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"
            )
            chars += sum(len(t) for t in texts if isinstance(t, str))
    if chars > limits.max_prompt_chars:
        raise RequestError(
            413,
            f"the prompt is {chars} characters (the roles and texts of all messages); at most "
            f"{limits.max_prompt_chars} are accepted",
        )


def _message(message: object, index: int, audio: list[np.ndarray], limits: ServerLimits) -> dict:
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
            audio.append(_decode_audio(part, where, limits))
            parts.append({"type": "audio", "audio_url": "clip"})
        else:
            raise RequestError(400, f"{where}: expected a text, input_audio or audio_url part")
    return {"role": message["role"], "content": parts}


def _decode_audio(part: dict, where: str, limits: ServerLimits) -> np.ndarray:
    """The audio part as 16 kHz mono float32, its header checked against ``limits`` first: the frames
    decoded (at most the duration allowed, whatever the header says) and resampled are bounded."""
    try:
        if part["type"] == "input_audio":
            data = part["input_audio"]["data"]
        else:
            url = part["audio_url"]["url"]
            if not url.startswith("data:") or ";base64," not in url:
                raise RequestError(400, f"{where}: only data: URLs (base64) are served, not remote audio")
            data = url.split(";base64,", 1)[1]
        raw = base64.b64decode(data, validate=True)
        info = sf.info(io.BytesIO(raw))
        rate, max_frames = _check_header(info, where, limits)
        samples, rate = sf.read(io.BytesIO(raw), frames=max_frames + 1, dtype="float32", always_2d=True)
    except RequestError:
        raise
    except (KeyError, TypeError, AttributeError, binascii.Error, sf.LibsndfileError, RuntimeError) as exc:
        raise RequestError(400, f"{where}: cannot read the audio ({type(exc).__name__}: {exc})") from None
    if len(samples) > max_frames:  # the header understated the length
        raise RequestError(
            413,
            f"{where}: the audio is longer than its header says; at most "
            f"{limits.max_audio_seconds:g} s are accepted",
        )
    audio = resample(to_channels(np.ascontiguousarray(samples.T), 1), rate, SAMPLE_RATE)[0]
    if audio.size == 0 or not np.isfinite(audio).all():
        raise RequestError(400, f"{where}: the audio is empty or holds NaN/Inf samples")
    return audio


def _check_header(info, where: str, limits: ServerLimits) -> tuple[int, int]:
    """(sample rate, most frames allowed) of an audio header within ``limits``, else ``RequestError``."""
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise RequestError(
            400,
            f"{where}: the audio's sample rate {rate} Hz is outside "
            f"{limits.min_sample_rate}-{limits.max_sample_rate} Hz",
        )
    if channels > limits.max_channels:
        raise RequestError(
            400, f"{where}: the audio has {channels} channels; at most {limits.max_channels} are accepted"
        )
    if frames / rate > limits.max_audio_seconds:
        raise RequestError(
            413,
            f"{where}: the audio is {frames / rate:.2f} s long; at most "
            f"{limits.max_audio_seconds:g} s are accepted",
        )
    return rate, math.floor(limits.max_audio_seconds * rate)


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


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (reachable from this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool = False) -> None:
    """Refuse a non-loopback address unless ``allow_remote``: the server has no authentication of its own."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"refusing to serve the judge on {host}: it is reachable from other machines and the server "
            "has no authentication by default; use 127.0.0.1, or pass --allow-remote (with --api-key-env)"
        )


class JudgeHTTPServer(ThreadingHTTPServer):
    """The HTTP front of a ``JudgeEngine``. ``start()`` serves from a background thread (tests);
    ``close()`` (or leaving a ``with`` block) stops it and ends the connections clients keep open."""

    daemon_threads = True  # a handler thread never holds up the process's exit
    request_queue_size = 128
    """Listen backlog: connections the kernel queues while the server is busy (5, socketserver's
    default, dropped the connections of 10-50% of 60-100 concurrent clients)."""
    close_timeout = 10.0
    """Seconds ``close()`` waits for the handlers of open connections to finish: a request being
    answered completes, an idle kept-alive connection ends at once."""

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
        limits: ServerLimits | None = None,
    ) -> None:
        check_host(host, allow_remote)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.engine = engine
        self.served_name = served_name
        self.limits = limits or ServerLimits()
        self._api_key = api_key
        self.faults = FaultPlan(faults)
        self._thread: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)
        if not api_key and not is_loopback(host):
            _warn_unauthenticated(host)

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
        """Whether an ``Authorization`` header carries the key: ``Bearer KEY``, the scheme in any case
        (HTTP auth schemes are case-insensitive), the key as UTF-8 or latin-1 bytes."""
        if not self._api_key:
            return True
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        got = token.strip().encode("latin-1", "replace")  # http.server decoded the header as latin-1
        wanted = [self._api_key.encode("utf-8")]
        with contextlib.suppress(UnicodeEncodeError):
            wanted.append(self._api_key.encode("latin-1"))
        return any([hmac.compare_digest(got, w) for w in wanted])

    def start(self) -> JudgeHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="judge-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (if started in the background), release the port and end the connections
        clients keep open; the engine stays up."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.shutdown()
            thread.join()
        self.server_close()

    def __exit__(self, *args) -> None:
        self.close()

    def process_request(self, request, client_address) -> None:
        """Handle the connection in a daemon thread, remembered until the connection ends."""
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name="judge-http-connection"
        )
        thread.daemon = True
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Stop listening, end the open connections and wait (``close_timeout``) for their handlers.

        A handler waiting for a kept-alive client's next request reads the end of it at once (not at
        its idle timeout) and closes; one answering a request still sends its reply, then closes.
        Waiting for them matters at exit too: a daemon thread still running Python while the
        interpreter finalizes can abort the process ("terminate called without an active exception").
        """
        super().server_close()
        with self._connections_lock:
            handlers = dict(self._connections)
        for connection in handlers:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + self.close_timeout
        for thread in handlers.values():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request, client_address) -> None:
        log.exception("judge server: error while handling a request from %s", client_address[0])


def _warn_unauthenticated(host: str) -> None:
    message = (
        f"serving the judge on {host} without an API key: anyone who can reach this machine can use it "
        "(set one with --api-key-env)"
    )
    log.warning(message)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


class _Handler(BaseHTTPRequestHandler):
    server: JudgeHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds a silent client may hold a connection (and its thread)

    def log_message(self, format: str, *args) -> None:  # the request line only; headers are never logged
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        if "Transfer-Encoding" in self.headers or self.headers.get("Content-Length", "0").strip() != "0":
            self.close_connection = True  # a body is never read here: it must not be read as a request
        if self.path.rstrip("/") == "/health":  # open: tells a load balancer only that the server is up
            self._json(200, {"status": "ok"})
        elif self.path.rstrip("/") == "/v1/models":
            if self._refused():
                return
            model = {"id": self.server.served_name, "object": "model", "created": 0, "owned_by": "ttaeval"}
            self._json(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        limit = self.server.limits.max_body_bytes
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            # A chunked body read as empty would leave its chunks to be parsed as the next request.
            self.close_connection = True
            message = (
                "a request body needs a Content-Length header (chunked transfer encoding is not supported)"
            )
            return self._error(411, message)
        try:
            length = int(self.headers["Content-Length"])
        except ValueError:
            length = -1
        if not 0 <= length <= limit:
            self.close_connection = True
            return self._error(413, f"Content-Length must be a size up to {limit} bytes")
        body = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        if self._refused():
            return
        try:
            request = parse_request(body, self.server.served_name, self.server.limits)
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
        except RequestError as exc:  # the judge refused it (a chat text longer than its context)
            return self._error(exc.status, str(exc))
        except Exception as exc:
            log.exception("judge server: the model failed on a request")
            return self._error(500, f"the judge failed: {type(exc).__name__}: {exc}", "server_error")
        out = completion(self.server.served_name, reply, request.logprobs)
        if fault is not None and fault.kind == "no-logprobs":
            out["choices"][0]["logprobs"] = None
        self._json(200, out)

    def _refused(self) -> bool:
        """Answer 401 (and True) unless the request carries the API key, when one is set."""
        if self.server.authorized(self.headers.get("Authorization")):
            return False
        self._error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
        return True

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
            if self.close_connection:
                self.send_header("Connection", "close")
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
    limits: ServerLimits | None = None,
    on_ready: Callable[[JudgeHTTPServer], None] | None = None,
) -> None:
    """Serve ``engine`` until interrupted (Ctrl-C, or SIGTERM from the main thread), then end the open
    connections and close the engine; ``on_ready(server)`` runs once bound.

    Served from the main thread (``ttaeval judge serve``), the process is expected to end soon after:
    its interpreter then skips the cyclic garbage collection of its teardown (``gc.freeze`` at exit).
    That walk over torch's and transformers' objects is what makes Ctrl-C slow, and the memory is
    returned to the system at exit anyway.
    """
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    if in_main:
        _skip_teardown_gc()
    try:
        server = JudgeHTTPServer(
            engine,
            served_name=served_name,
            host=host,
            port=port,
            api_key=api_key,
            faults=faults,
            allow_remote=allow_remote,
            limits=limits,
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


_teardown_gc_skipped = False


def _skip_teardown_gc() -> None:
    """At interpreter exit, move every object out of the cyclic collector's reach before the modules
    are torn down (once per process; nothing changes while the process runs)."""
    global _teardown_gc_skipped
    if not _teardown_gc_skipped:
        _teardown_gc_skipped = True
        atexit.register(gc.freeze)
