"""A persistent latency cache: SQLite, keyed by (candidate signature, input shape, device fingerprint)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from frontier.evaluators.latency._measure import LatencyStats

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    key TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    stats TEXT NOT NULL,
    measured_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reference (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    nominal_ms REAL NOT NULL,
    measured_at REAL NOT NULL
)
"""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class LatencyCache:
    """Measured latencies that outlive a trial and a study.

    A figure is only valid for the candidate's architecture (its *signature*: the parameters and options
    that change the computation, not training settings), the input it was timed on, and the device
    fingerprint (:func:`~evaluators.latency.device_fingerprint`: hardware, torch version, threads, dtype).
    All three make the key, so a different machine, torch version or thread count is a miss, never a stale
    hit. Several processes may read and write the same file (SQLite WAL, busy timeout).

    Args:
        path: the SQLite file; created with its directory on first use.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"LatencyCache({str(self.path)!r})"

    @staticmethod
    def key(
        signature: Mapping[str, Any], *, input_shape: Sequence[int], fingerprint: Mapping[str, str]
    ) -> str:
        raw = _canonical([dict(signature), [int(d) for d in input_shape], dict(fingerprint)])
        return hashlib.sha256(raw.encode()).hexdigest()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            with conn:
                yield conn

    def get(
        self, signature: Mapping[str, Any], *, input_shape: Sequence[int], fingerprint: Mapping[str, str]
    ) -> LatencyStats | None:
        """The stored figure for this key, or None."""
        key = self.key(signature, input_shape=input_shape, fingerprint=fingerprint)
        with self._connect() as conn:
            row = conn.execute("SELECT stats FROM latency WHERE key = ?", (key,)).fetchone()
        return None if row is None else LatencyStats(**json.loads(row[0]))

    def put(
        self,
        signature: Mapping[str, Any],
        *,
        input_shape: Sequence[int],
        fingerprint: Mapping[str, str],
        stats: LatencyStats,
    ) -> None:
        """Store (or replace) the figure for this key."""
        key = self.key(signature, input_shape=input_shape, fingerprint=fingerprint)
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    _canonical(dict(signature)),
                    _canonical([int(d) for d in input_shape]),
                    _canonical(dict(fingerprint)),
                    _canonical(stats.to_dict()),
                    time.time(),
                ),
            )

    def reference_ms(self, fingerprint: Mapping[str, str], calibrate: Callable[[], float]) -> float:
        """The reference workload's nominal time on this device (see :mod:`evaluators.latency._reference`).

        The first caller for a fingerprint calibrates and stores it; every later figure for that
        fingerprint, in any process, uses the stored value, so all figures in the cache share one scale.
        """
        from frontier.evaluators.latency._reference import reference_key

        key = hashlib.sha256(_canonical([dict(fingerprint), reference_key()]).encode()).hexdigest()
        with self._connect() as conn:
            row = conn.execute("SELECT nominal_ms FROM reference WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return float(row[0])
        nominal = float(calibrate())
        with self._connect() as conn:  # the first writer wins; a concurrent calibration is discarded
            conn.execute(
                "INSERT OR IGNORE INTO reference VALUES (?, ?, ?, ?)",
                (key, _canonical(dict(fingerprint)), nominal, time.time()),
            )
            row = conn.execute("SELECT nominal_ms FROM reference WHERE key = ?", (key,)).fetchone()
        return float(row[0])

    def entries(self) -> list[dict[str, Any]]:
        """Every stored figure: signature, input shape, fingerprint and stats (plain dicts)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT signature, input_shape, fingerprint, stats, measured_at FROM latency "
                "ORDER BY measured_at"
            ).fetchall()
        return [
            {
                "signature": json.loads(s),
                "input_shape": json.loads(i),
                "fingerprint": json.loads(f),
                "stats": json.loads(st),
                "measured_at": t,
            }
            for s, i, f, st, t in rows
        ]

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM latency").fetchone()[0])
