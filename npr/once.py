"""`Once`: run a registration body at most once per process (thread-safe; a body that raised may be retried)."""

from __future__ import annotations

import threading
from typing import Callable


class Once:
    def __init__(self, body: Callable[[], None]):
        self._body = body
        self._lock = threading.Lock()
        self.done = False

    def __call__(self) -> None:
        with self._lock:
            if not self.done:
                self._body()
                self.done = True
