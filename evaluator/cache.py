"""SQLite caches: verdicts keyed by a hash of everything that can change a verdict, and reference embeddings."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_key(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# Seconds a connection waits for another writer (and the WAL switch of a new file is retried): one figure for all.
BUSY_WAIT = 30.0


def _set_up(connect: Callable[[], sqlite3.Connection], create_table: str) -> None:
    """WAL journal and the table, for a file that other processes or threads may be opening at the same moment.
    Switching a new file to WAL takes a lock that SQLite's busy timeout does not wait for (one of six threads
    opening a new cache together failed with "database is locked"), so that step is retried here; once the
    file is in WAL mode it is not switched again."""
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        try:
            with connect() as c:
                if str(c.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    c.execute("PRAGMA journal_mode=WAL")
                c.execute(create_table)
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class VerdictCache:
    """Safe for concurrent writers: WAL journal, a busy timeout, one short transaction per write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        _set_up(
            self._conn,
            "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL, created REAL NOT NULL)",
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_WAIT)
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_WAIT * 1000)}")
            # WAL + NORMAL: no fsync per verdict; a killed process loses nothing, an OS crash at most the
            # last verdicts, which are graded again.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT verdict FROM verdicts WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, verdict_json: str) -> None:
        with self._conn() as c:
            c.execute(
                "INSERT OR REPLACE INTO verdicts (key, verdict, created) VALUES (?, ?, ?)",
                (key, verdict_json, time.time()),
            )

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]


class VectorCache:
    """Embeddings of reference answers and key points on disk, so a bank is encoded once per machine,
    not once per process. Keyed by the embedder's name and a hash of the text."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _set_up(
            lambda: sqlite3.connect(self.path, timeout=BUSY_WAIT),
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vec BLOB NOT NULL, PRIMARY KEY (model, key))",
        )

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_many(self, model: str, texts: list[str]) -> dict[str, np.ndarray]:
        keys = {self.key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        with sqlite3.connect(self.path, timeout=BUSY_WAIT) as c:  # timeout: how long to wait for another writer
            items = list(keys)
            for i in range(0, len(items), 500):
                chunk = items[i : i + 500]
                q = f"SELECT key, vec FROM vectors WHERE model=? AND key IN ({','.join('?' * len(chunk))})"
                for k, v in c.execute(q, (model, *chunk)):
                    found[keys[k]] = np.frombuffer(v, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        with sqlite3.connect(self.path, timeout=BUSY_WAIT) as c:
            c.executemany(
                "INSERT OR REPLACE INTO vectors (model, key, vec) VALUES (?, ?, ?)",
                [(model, self.key(t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in items.items()],
            )
