"""A persistent latency cache: SQLite, keyed by (candidate signature, input shape, device fingerprint)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from evaluators.latency._measure import LatencyStats

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    key TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    stats TEXT NOT NULL,
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
            conn.execute(_SCHEMA)
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
