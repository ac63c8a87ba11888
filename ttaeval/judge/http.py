"""``judge:http`` — the judge on an OpenAI-compatible chat-completions server (vLLM, ``ttaeval judge serve``).

Each question is one request: the clip as an ``input_audio`` content part (a base64 WAV of 32-bit
float samples, so the server decodes exactly the float32 samples ``judge:hf`` would see), then the
question as a text part; ``max_tokens`` 1, ``temperature`` 0, ``logprobs`` with ``top_logprobs``.
The answer is read from ``choices[0].logprobs.content[0].top_logprobs``: a candidate token's
probability is ``exp(logprob)`` of the listed token spelled exactly as the candidate — the token
``judge:hf`` reads — or, when no listed token is, the sum over those that read as the candidate once
leading whitespace and space markers (``Ġ``, ``▁``) are stripped (servers differ in how they spell
a token: decoded text, raw byte-level or SentencePiece pieces); 0 when none is listed (the top-k
cut: raise ``top_logprobs`` if the rating tokens fall outside it).

Requests run concurrently (``concurrency`` at a time) over kept-alive HTTP/1.1 connections (one per
request thread), each bounded by ``timeout``; a clip's WAV is encoded once for all of its questions
(the chat-completions API takes one conversation a request, so each request carries it); timeouts,
connection failures, malformed bodies and HTTP 408/429/5xx are retried with exponential backoff and
jitter, honouring ``Retry-After``. A reply that still cannot be read becomes an explicit failure
record (NaN with what went wrong, after how many attempts, and the start of the reply) — never a 0.
Replies without logprobs and other HTTP errors (400, 401, 404 ...) are not retried: asking again
would get the same answer.

The API key is read from the environment variable named by ``api_key_env`` at each request and sent
as ``Authorization: Bearer`` (UTF-8); it is never stored on the scorer, never enters its id or repr,
and is masked in any reply text kept in a failure record or logged — in every encoding a server may
echo it in (raw, JSON-, URL-, HTML- or backslash-escaped, non-ASCII characters mangled), over the
whole reply before the kept part is cut from it. Redirects are not followed (they could carry the key
elsewhere) and no proxy is used.
"""

from __future__ import annotations

import base64
import functools
import html
import http.client
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import numpy as np

from ttaeval.io.audio import float_wav_bytes
from ttaeval.judge.base import Answer, JudgeScorer

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth asking again (overload, rate limits, server errors)."""
MAX_RETRY_AFTER = 60.0
"""A server's Retry-After is honoured up to this many seconds."""
RAW_CHARS = 200
"""How much of a reply a failure record keeps."""
MAX_REPLY_BYTES = 16 << 20
"""Most of a reply body read (a first-token reply is kilobytes); a longer one reads as malformed."""
_MARKERS = re.compile(r"^[\sĠ▁]+")


def token_text(token: str) -> str:
    """A server's token string as the candidate it reads as: leading whitespace and the byte-level
    BPE (``Ġ``) and SentencePiece (``▁``) space markers stripped, so " Yes" and "ĠYes" read as "Yes"."""
    return _MARKERS.sub("", token)


class ReplyError(Exception):
    """A reply that cannot be read; ``retry`` says whether asking again may help."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def read_reply(body: bytes, tokens: Sequence[str]) -> Answer:
    """The first-token probabilities of ``tokens`` from a chat-completions reply body (matched as the
    module docstring says).

    A malformed body raises ``ReplyError(retry=True)`` (a truncated transfer may not recur); a
    well-formed reply without logprobs raises ``ReplyError(retry=False)``. A reply whose listed
    tokens include none of ``tokens`` is an ``Answer`` with no probabilities (the judge then reports
    the raw answer).
    """
    try:
        reply = json.loads(body)
        choice = reply["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ReplyError(f"malformed reply ({type(exc).__name__}: {exc})", retry=True) from None
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    try:
        first = choice["logprobs"]["content"][0]
        listed = first["top_logprobs"]
        pairs = [(str(e["token"]), float(e["logprob"])) for e in listed]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ReplyError(
            f"the reply has no logprobs (choices[0].logprobs.content[0].top_logprobs: "
            f"{type(exc).__name__} {exc}); the server must support logprobs/top_logprobs",
            retry=False,
        ) from None
    if not pairs:
        raise ReplyError("the reply lists no top_logprobs (was top_logprobs 0?)", retry=False)
    raw = content if isinstance(content, str) and content else str(first.get("token", pairs[0][0]))
    probs: dict[str, float] = {}
    for candidate in tokens:
        exact = [lp for token, lp in pairs if token == candidate]
        alike = exact or [lp for token, lp in pairs if token_text(token) == token_text(candidate)]
        if alike:
            probs[candidate] = sum(math.exp(lp) for lp in alike)
    return Answer(probs, raw=raw)


def encode_wav(audio: np.ndarray, sample_rate: int) -> str:
    """Base64 of a mono WAV of 32-bit float samples: lossless, so the server sees the same float32."""
    return base64.b64encode(float_wav_bytes(audio, sample_rate)).decode("ascii")


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds, capped at ``MAX_RETRY_AFTER``."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def retry_delay(attempt: int, backoff: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``backoff * 2**(attempt-1)`` times a jitter in
    [0.5, 1.5), and never less than the server's Retry-After."""
    delay = backoff * 2 ** (attempt - 1) * (0.5 + rng.random())
    return max(delay, retry_after or 0.0)


@dataclass
class HTTPJudgeScorer(JudgeScorer):
    """The judge on an OpenAI-compatible server: one chat-completions request per question."""

    backend = "http"
    id_exclude = (
        *JudgeScorer.id_exclude,
        "url",
        "api_key_env",
        "concurrency",
        "timeout",
        "retries",
        "backoff",
    )

    url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the API (``/chat/completions`` is appended); not in the id: where a model is served
    does not change its numbers."""
    served_model: str = ""
    """The ``model`` field sent, as the server names it (``GET /v1/models``); enters the id. Name it so
    it pins the weights (e.g. vLLM ``--served-model-name qwen2-audio-7b@<revision>``): cached scores
    are keyed by this name, not by the weights behind it."""
    api_key_env: str = "TTAEVAL_JUDGE_API_KEY"
    """Environment variable holding the API key, read at each request (unset or empty: no key sent)."""
    top_logprobs: int = 20
    """Candidates listed per answer (OpenAI and vLLM allow 20 by default); enters the id, since a
    candidate outside the top k reads as probability 0."""
    concurrency: int = 8
    """Requests in flight at once, across all of this scorer's calls (batches scored from several
    threads, as a GRPO trainer's ``reward_workers`` do, share the bound and fill each other's idle slots)."""
    timeout: float = 60.0
    """Seconds to wait for the server at each step of a request (connect, each read)."""
    retries: int = 3
    """Further attempts after a retryable failure (timeout, connection error, malformed body, HTTP
    408/429/5xx)."""
    backoff: float = 0.5
    """Base wait in seconds before a retry, doubled each attempt, with jitter."""
    family: str = "qwen2-audio"
    """Question texts and answer tokens (see ``TEMPLATES``); the server's model family."""

    def __post_init__(self) -> None:
        super().__post_init__()
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"judge:http url must be http(s)://HOST[:PORT]/PATH, got {self.url!r}")
        if not self.served_model:
            raise ValueError(
                "judge:http needs served_model=NAME: the model name the server serves (GET /v1/models)"
            )
        if self.top_logprobs < 1 or self.concurrency < 1 or self.retries < 0:
            raise ValueError("judge:http needs top_logprobs >= 1, concurrency >= 1 and retries >= 0")
        if not self.timeout > 0 or not self.backoff >= 0:
            raise ValueError("judge:http needs timeout > 0 and backoff >= 0")
        self._parts = parts
        self._path = parts.path.rstrip("/") + "/chat/completions"
        self._rng = random.Random()  # jitter only; never touches the global random state
        self._requests = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge-http")
        self._local = threading.local()  # each request thread's kept-alive connection

    def backend_identity(self) -> dict[str, object]:
        return {"served_model": self.served_model, "top_logprobs": self.top_logprobs}

    def answer(
        self, audio: Sequence[np.ndarray], questions: Sequence[str], tokens: Sequence[str]
    ) -> list[Answer]:
        encoded: dict[tuple, str] = {}  # the questions of one clip share its samples: encode once
        wavs = []
        for a in audio:
            key = (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
            if key not in encoded:
                encoded[key] = encode_wav(a, self.sample_rate)
            wavs.append(encoded[key])
        if not questions:
            return []
        return list(self._requests.map(lambda wq: self.ask(wq[0], wq[1], tokens), zip(wavs, questions)))

    def payload(self, wav_base64: str, question: str) -> bytes:
        """The request body for one question about one clip."""
        content = [
            {"type": "input_audio", "input_audio": {"data": wav_base64, "format": "wav"}},
            {"type": "text", "text": question},
        ]
        return json.dumps(
            {
                "model": self.served_model,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
        ).encode()

    def ask(self, wav_base64: str, question: str, tokens: Sequence[str]) -> Answer:
        """One question, with retries; a reply that cannot be read is an ``Answer`` with ``error``."""
        body = self.payload(wav_base64, question)
        why, raw = "no attempt made", b""
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            key = os.environ.get(self.api_key_env) or None
            retry_after, raw = None, b""
            if key and not key.isprintable():  # http.client would put the key in its error message
                why, retry = f"the API key in ${self.api_key_env} holds a control character; not sent", False
                break
            try:
                status, headers, raw = self._post(body, key)
            except TimeoutError:
                why, retry = f"no reply within the {self.timeout:g} s timeout", True
            except (OSError, http.client.HTTPException) as exc:
                why, retry = f"connection failed ({type(exc).__name__}: {exc})", True
            else:
                if status == 200:
                    try:
                        answer = read_reply(raw, tokens)
                        answer.raw = _scrub(answer.raw, key)
                        return answer
                    except ReplyError as exc:
                        why, retry = str(exc), exc.retry
                else:
                    why, retry = f"HTTP {status}", status in RETRY_STATUS
                    retry_after = retry_after_seconds(headers.get("retry-after"))
            if not retry or attempt == attempts:
                break
            delay = retry_delay(attempt, self.backoff, retry_after, self._rng)
            log.warning(
                "judge:http %s: %s; retrying in %.2f s (attempt %d of %d)",
                self._parts.hostname,
                _scrub(why, key),
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
        text = _scrub(raw.decode("utf-8", "replace"), key, keep=RAW_CHARS)
        plural = "s" if attempt > 1 else ""
        error = f"judge:http: {_scrub(why, key)}, after {attempt} attempt{plural}"
        return Answer({}, raw=text, error=error + (f" (reply: {text!r})" if text else ""))

    def _post(self, body: bytes, key: str | None) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body) of one POST, no redirects, on this thread's kept-alive
        connection (HTTP/1.1): a connection the server has closed since its last reply is replaced
        and the request sent once more; any other failure closes it."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:  # bytes: any key, as UTF-8 (a str header must be latin-1)
            headers["Authorization"] = b"Bearer " + key.encode("utf-8")  # type: ignore[assignment]
        for again in (False, True):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read(MAX_REPLY_BYTES)
                if not response.isclosed():  # a reply longer than read: the connection is unusable
                    conn.close()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if not reused or again:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's connection to the server (opened on its first request)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            parts = self._parts
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(parts.hostname, parts.port, timeout=self.timeout)
        return conn


def char_forms(c: str) -> set[str]:
    """The ways a server may write the character ``c`` of a key back: itself; JSON-escaped (``\\"``,
    ``\\uXXXX``, surrogate pairs); URL-encoded (``%XX`` per UTF-8 byte, ``+`` for a space);
    HTML-escaped (named, decimal, hex); as a Python/ASCII escape (``\\xHH``, ``\\uXXXX``,
    ``\\UXXXXXXXX``); its UTF-8 bytes read as latin-1, or replaced (U+FFFD, ``?``) by a wrong
    decoding; and each of those JSON-escaped once more (an escaped key inside a JSON string)."""
    code = ord(c)
    utf8 = c.encode("utf-8", "surrogatepass")
    utf16 = c.encode("utf-16-be", "surrogatepass")
    forms = {
        c,
        json.dumps(c)[1:-1],
        "".join(f"\\u{utf16[i]:02x}{utf16[i + 1]:02x}" for i in range(0, len(utf16), 2)),
        "".join(f"%{b:02X}" for b in utf8),
        html.escape(c),
        f"&#{code};",
        f"&#x{code:x};",
        ascii(c)[1:-1],
        c.encode("unicode_escape").decode("ascii"),
        f"\\U{code:08x}",
    }
    if c in "\"'/\\":
        forms.add("\\" + c)
    if c == " ":
        forms.add("+")
    if c == "'":
        forms.add("&apos;")
    if not c.isascii():
        forms |= {utf8.decode("latin-1"), *("\ufffd" * n for n in range(1, len(utf8) + 1)), "?"}
    return forms | {json.dumps(f)[1:-1] for f in forms}


@functools.lru_cache(maxsize=4)
def _key_pattern(key: str) -> tuple[re.Pattern[str], int]:
    """The key with each character in any of its ``char_forms`` (so a server escaping some characters
    and not others is matched too), letters in any case (``%2f`` for ``%2F``); and the longest text
    it matches."""
    chars, longest = [], 0
    for c in key:
        forms = sorted(char_forms(c), key=len, reverse=True)
        chars.append("(?:" + "|".join(re.escape(f) for f in forms) + ")")
        longest += len(forms[0])
    return re.compile("".join(chars), re.IGNORECASE), longest


def _scrub(text: str, key: str | None, keep: int | None = None) -> str:
    """``text`` with the API key masked in any form a server may echo it in (``char_forms``); with
    ``keep``, only its first ``keep`` characters, a key that starts among them masked whole (cutting
    first would leave the start of a key that straddles the cut unrecognisable, and kept)."""
    if not key:
        return text[:keep]
    pattern, longest = _key_pattern(key)
    if keep is None:
        return pattern.sub("***", text)
    out, pos = [], 0
    for match in pattern.finditer(text, 0, keep + longest):
        if match.start() >= keep:
            break
        out += [text[pos : match.start()], "***"]
        pos = match.end()
    out.append(text[pos:keep])
    return "".join(out)
