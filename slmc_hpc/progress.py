"""Progress lines for long loops: steps done, rate, ETA, running acceptance."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, every_s: float, log=None, done: int = 0):
        """``done``: steps already done before this process started (a resumed run), which
        do not count in the rate."""
        self.label, self.total, self.every_s, self.first = label, total, every_s, done
        self.log = log or (lambda line: print(line, file=sys.stdout, flush=True))
        self.start = self._last = time.monotonic()

    def update(self, done: int, acceptance: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self.start
        rate = (done - self.first) / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        self.log(f"{self.label:>10} {done:>8d}/{self.total:<8d} {rate:9.1f} steps/s  ETA {_hms(eta)}  "
                 f"acceptance {acceptance:.3f}")


def _hms(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "--:--:--"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
