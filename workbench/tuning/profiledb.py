"""The profile database: measured costs of routines and adapts, in SQLite, keyed by machine.

A record is keyed by the machine :func:`fingerprint` (CPU model and ISA flags, thread count,
kernel build flags, BLAS core type, library version), the kind (``routine`` or ``adapt``), the
layer (or edge) :func:`signature` and the routine/adapt name, so re-tuning a model, or tuning
another model with the same layers, reuses what was measured.  Writes are transactions in WAL
mode with a busy timeout: several tuning processes may write at once.  A file that is not a
readable database raises :class:`ProfileDatabaseError` naming it; :meth:`ProfileDatabase.rebuild`
moves it aside (never deleting anything) and starts a new one.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WorkbenchError

SCHEMA_VERSION = 1


class ProfileDatabaseError(WorkbenchError):
    """The profile database file is corrupt, not a database, or of another schema."""


def default_path() -> Path:
    """``$WORKBENCH_PROFILE_DB``, else ``$XDG_CACHE_HOME/routine-workbench/profiles.sqlite``."""
    if os.environ.get("WORKBENCH_PROFILE_DB"):
        return Path(os.environ["WORKBENCH_PROFILE_DB"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "routine-workbench" / "profiles.sqlite"


def fingerprint_facts(num_threads):
    """What the measurements depend on, as a dict (stored next to the records, shown to users)."""
    from .._version import __version__
    from ..runtime import cpu
    from .measure import METHOD
    build = Path(__file__).parents[1] / "_kernels" / "build_info.json"   # workbench/_kernels
    isa = sorted(f for f in cpu.flags() if f.startswith(("avx", "fma", "f16c", "sse4", "amx")))
    return {"cpu": cpu.cpu_name(), "isa": isa, "threads": int(num_threads),
            "build": json.loads(build.read_text()) if build.exists() else None,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "workbench": __version__,
            "measurement": METHOD}


def fingerprint(num_threads) -> str:
    facts = fingerprint_facts(num_threads)
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "dtype": value.dtype.name}   # values do not change timing
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def signature(layer, input_specs) -> str:
    """What a layer's cost depends on: op, attributes, input specs, constant shapes; not its name."""
    data = {"op": layer.op, "attrs": _jsonable(layer.attrs),
            "inputs": [None if s is None else [list(s.shape), s.dtype] for s in input_specs],
            "consts": sorted(layer.consts), "outputs": [[list(s.shape), s.dtype] for s in layer.out_specs]}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass
class Record:
    kind: str
    signature: str
    name: str
    median: float
    spread: float
    samples: list
    prepare_s: float = 0.0


class ProfileDatabase:
    """Records for one machine fingerprint in one SQLite file."""

    def __init__(self, path=None, num_threads=1, fingerprint_value=None):
        self.path = Path(path) if path is not None else default_path()
        self.fingerprint = fingerprint_value or fingerprint(num_threads)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout = 60000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._create()
        except sqlite3.DatabaseError as e:
            raise ProfileDatabaseError(
                f"profile database {self.path}: cannot be read ({e}); rebuild it with "
                f"`workbench profile --rebuild-db` or ProfileDatabase.rebuild(path) (the old file is kept "
                f"beside it), or point WORKBENCH_PROFILE_DB elsewhere") from None

    def _create(self):
        with self._transaction() as c:
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            c.execute("""CREATE TABLE IF NOT EXISTS records (
                fingerprint TEXT NOT NULL, kind TEXT NOT NULL, signature TEXT NOT NULL, name TEXT NOT NULL,
                median REAL NOT NULL, spread REAL NOT NULL, samples TEXT NOT NULL, prepare_s REAL NOT NULL,
                created REAL NOT NULL, PRIMARY KEY (fingerprint, kind, signature, name))""")
            c.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            row = c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"schema version {row and row[0]}, expected {SCHEMA_VERSION}")

    class _Tx:
        def __init__(self, conn):
            self.conn = conn

        def __enter__(self):
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, *rest):
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self):
        return self._Tx(self._conn)

    def put(self, records):
        """Store (or replace) records in one transaction."""
        rows = [(self.fingerprint, r.kind, r.signature, r.name, float(r.median), float(r.spread),
                 json.dumps([float(s) for s in r.samples]), float(r.prepare_s), time.time()) for r in records]
        with self._transaction() as c:
            c.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def get(self, kind, signature_value, name):
        row = self._conn.execute(
            "SELECT median, spread, samples, prepare_s FROM records WHERE fingerprint=? AND kind=? AND signature=? "
            "AND name=?", (self.fingerprint, kind, signature_value, name)).fetchone()
        if row is None:
            return None
        try:
            samples = json.loads(row[2])
        except ValueError:
            raise ProfileDatabaseError(f"profile database {self.path}: record {kind}/{name} has corrupt samples") from None
        return Record(kind, signature_value, name, row[0], row[1], samples, row[3])

    def records(self):
        """Every record of this fingerprint."""
        rows = self._conn.execute("SELECT kind, signature, name, median, spread, samples, prepare_s FROM records "
                                  "WHERE fingerprint=? ORDER BY kind, signature, name", (self.fingerprint,)).fetchall()
        return [Record(k, s, n, m, sp, json.loads(sa), p) for k, s, n, m, sp, sa, p in rows]

    def forget(self, kind=None):
        """Drop this fingerprint's records (of one kind, or all): what ``--reprofile`` does."""
        with self._transaction() as c:
            if kind is None:
                c.execute("DELETE FROM records WHERE fingerprint=?", (self.fingerprint,))
            else:
                c.execute("DELETE FROM records WHERE fingerprint=? AND kind=?", (self.fingerprint, kind))

    def close(self):
        self._conn.close()

    @staticmethod
    def rebuild(path):
        """Move a corrupt database (and its WAL files) aside as ``<name>.corrupt-<time>``; returns
        the new location of the old file.  Nothing else in the directory is touched."""
        path = Path(path)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = path.with_name(f"{path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(path) + suffix)
            if p.exists():
                p.rename(Path(str(moved) + suffix))
        return moved
