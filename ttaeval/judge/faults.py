"""Fault injection for ``ttaeval judge serve``: a deterministic schedule of broken replies.

Clients of the judge server (``judge:http``, trainers sharing one judge) must survive what real
servers do under load. A ``FaultPlan`` numbers the server's valid chat-completions requests 1, 2,
3 ... and, for each, applies the first ``Fault`` whose schedule matches: request ``n`` is hit when
``n % every == 0``, until the fault has been applied ``times`` times. So ``http500,times=2`` breaks
the first two requests (transient: a client that retries recovers), ``malformed`` breaks every one
(permanent: the client must give up with a failure record), ``delay,every=3,seconds=2`` stalls every
third. Faults are off unless asked for (``--fault`` on the command line, ``faults=`` in code).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

FAULT_KINDS = {
    "delay": "wait `seconds` (default 2) and then answer normally: past a client's timeout",
    "http500": "HTTP 500 with an error body",
    "http503": "HTTP 503 with Retry-After: `retry_after` seconds (default 1)",
    "http429": "HTTP 429 (rate limited) with Retry-After: `retry_after` seconds",
    "reset": "close the connection without a reply (TCP reset)",
    "malformed": "HTTP 200 with a truncated JSON body",
    "no-logprobs": "HTTP 200, the model's answer without logprobs",
    "not-yes-no": "HTTP 200, the answer 'Maybe', with no yes/no or rating token among the top logprobs",
}


@dataclass(frozen=True)
class Fault:
    """One kind of broken reply and when it strikes."""

    kind: str
    """One of ``FAULT_KINDS``."""
    every: int = 1
    """Strike requests whose number (from 1) is a multiple of this; 1 = every request."""
    times: int | None = None
    """Strike at most this many times (None: no limit)."""
    seconds: float = 2.0
    """How long ``delay`` waits before answering."""
    retry_after: float = 1.0
    """The Retry-After seconds sent with ``http503`` and ``http429``."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; kinds: {', '.join(FAULT_KINDS)}")
        if self.every < 1 or (self.times is not None and self.times < 0):
            raise ValueError(f"fault {self.kind}: every must be >= 1 and times >= 0")
        if self.seconds < 0 or self.retry_after < 0:
            raise ValueError(f"fault {self.kind}: seconds and retry_after must be >= 0")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``KIND[,every=N][,times=K][,seconds=S][,retry_after=S]``, e.g. ``http503,times=1``."""
        kind, *options = [p.strip() for p in spec.split(",")]
        kwargs: dict[str, object] = {}
        types = {"every": int, "times": int, "seconds": float, "retry_after": float}
        for option in options:
            key, eq, value = option.partition("=")
            if not eq or key not in types:
                raise ValueError(f"fault {spec!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
            try:
                kwargs[key] = types[key](value)
            except ValueError:
                raise ValueError(f"fault {spec!r}: cannot read {key}={value!r}") from None
        return cls(kind, **kwargs)  # type: ignore[arg-type]


class FaultPlan:
    """Which request gets which fault; counts what it injected (thread-safe)."""

    def __init__(self, faults: tuple[Fault, ...] | list[Fault] = ()) -> None:
        self.faults = tuple(faults)
        self.requests = 0
        """Valid chat-completions requests seen."""
        self.injected: Counter[str] = Counter()
        """Fault kind -> how many times it was applied."""
        self._fired: Counter[int] = Counter()
        self._lock = threading.Lock()

    def draw(self) -> Fault | None:
        """Count one request and return the fault to apply to it, if any."""
        with self._lock:
            self.requests += 1
            for i, fault in enumerate(self.faults):
                if self.requests % fault.every or (fault.times is not None and self._fired[i] >= fault.times):
                    continue
                self._fired[i] += 1
                self.injected[fault.kind] += 1
                return fault
            return None
