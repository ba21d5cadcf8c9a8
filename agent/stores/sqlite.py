"""The SQLite store: :class:`SqliteStore`, one row per key in a database in WAL mode with
``synchronous=FULL``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3

from agent.clock import utc_now
from agent.stores.encoding import _dumps, _parse_object
from agent.stores.errors import StoreCorrupt, StoreError, _Unreadable
from agent.stores.files import FILE_MODE, _aside_name, _fsync_directory, _make_directories
from agent.stores.group_commit import _CommittingStore
from agent.stores.problems import StoreProblem

__all__ = ["SqliteStore"]

# One logger for the whole package, named as before the split: "agent.stores".
logger = logging.getLogger("agent.stores")


def _is_corruption(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+
    if name:
        return bool(name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")))
    text = str(exc)
    return "not a database" in text or "malformed" in text


def _is_read_only(exc: BaseException) -> bool:
    """The database, its folder or its -wal/-shm may not be written by us: a read-only
    folder (WAL needs to create -wal and -shm), a read-only file or file system."""
    if isinstance(exc, PermissionError):
        return True
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return bool(name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")))
    text = str(exc)
    return "readonly" in text or "unable to open" in text


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return bool(name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")))
    return "locked" in str(exc)


_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database


class _NotMovedAside(StoreError):
    """A corrupt database could not be moved aside (so it must not be opened either)."""


class SqliteStore(_CommittingStore):
    """One row per key in an SQLite database, for stores that grow or are shared by many
    devices.

    * WAL journal with ``synchronous=FULL``: every commit syncs the WAL, so a save that
      returned survives a power cut (SQLite's documentation, cited in ADR-007);
    * ``busy_timeout`` seconds of waiting when another process holds the write lock, then
      the save fails (and :class:`agent.persist.DeviceStore` retries at the next save);
    * schema created on first use, versioned with ``PRAGMA user_version`` (1); a database
      of a newer version is refused rather than damaged;
    * one connection, used by one thread at a time (the committing thread); saves of
      several devices that arrive together are committed in one transaction.

    The database is created (0600, and SQLite gives its ``-wal`` and ``-shm`` files the same
    mode) at the first save, not by a load. A file that is not a database, or fails SQLite's
    ``quick_check``, is moved aside with its ``-wal``/``-shm`` files, logged, reported and
    replaced by an empty database; a row whose data is not a JSON object is renamed to
    ``<key>.corrupt-<UTC timestamp>`` and reported.
    """

    SCHEMA_VERSION = 1

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        if not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        super().__init__(path)
        self.busy_timeout = float(busy_timeout)
        self._conn: sqlite3.Connection | None = None
        self._aside_pending: str | None = None  # corrupt, but could not be moved aside yet
        self._replaced = False  # set aside after the first read: the next write writes all

    def close(self) -> None:
        with self._cond:
            while self._in_flight is not None:
                self._cond.wait()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _read(self) -> dict[str, bytes]:
        if not self._path.exists():
            return {}  # nothing saved yet: a load creates nothing
        try:
            conn = self._connection()
        except _NotMovedAside:
            return {}  # reported; every save tries to move it again, and fails until it can
        except (sqlite3.OperationalError, PermissionError) as exc:
            if not _is_read_only(exc):
                raise
            # Loading needs no writing: read what is there; the saves fail (reported, the
            # state kept in memory) until the folder is writable again.
            return self._read_only(exc)
        entries: dict[str, bytes] = {}
        for key, text in conn.execute("SELECT key, data FROM store").fetchall():
            try:
                entries[key] = _dumps(_parse_object(text, "the data"))
            except _Unreadable as exc:
                self._set_row_aside(conn, key, str(exc))
        return entries

    def _read_only(self, why: BaseException) -> dict[str, bytes]:
        logger.warning("%s cannot be written (%s): loading it read-only", self._path, why)
        wal = self._path.with_name(self._path.name + "-wal")
        # mode=ro still needs the -shm of a WAL database; with no -wal file left (a clean
        # close checkpoints and removes it) the main file is all there is: immutable=1.
        # as_uri() percent-encodes the path: a '?', '#' or '%' in it would change the URI.
        uri = self._path.absolute().as_uri() + "?mode=ro" + ("" if wal.exists() else "&immutable=1")
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
        try:
            rows = conn.execute("SELECT key, data FROM store").fetchall()
        finally:
            conn.close()
        entries: dict[str, bytes] = {}
        for key, text in rows:
            try:
                entries[key] = _dumps(_parse_object(text, "the data"))
            except _Unreadable as exc:  # set aside by the first load that may write
                logger.warning("%s: row %r skipped for now: %s", self._path, key, exc)
        return entries

    def _write(self, document: dict[str, bytes], changed: dict[str, bytes]) -> None:
        gone = self._conn is None and not self._path.exists()
        conn = self._connection()
        if self._replaced or gone:
            # A database set aside (or deleted) under us: this one must get every row, not
            # only the changed ones, or the others would be missing from it.
            changed = document
        try:
            conn.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout for the write lock
            try:
                conn.executemany(
                    "INSERT INTO store (key, data) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                    [(key, text.decode("utf-8")) for key, text in changed.items()],
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self._replaced = False
        except sqlite3.Error as exc:
            if not _is_busy(exc):
                # After an I/O error a connection may stay unusable; the next save reopens.
                self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            _make_directories(self._path.parent)
            self._create_file()
            try:
                self._check_header()
                self._conn = self._open_database()
            except _Unreadable as exc:
                self._set_aside(str(exc))
                self._create_file()
                self._conn = self._open_database()
                self._replaced = True
            self._aside_pending = None
        return self._conn

    def _check_header(self) -> None:
        """Refuse a file that is not SQLite before SQLite opens it: SQLite would delete a
        ``-wal`` file beside it when the connection closes, and that may hold the data."""
        with open(self._path, "rb") as file:
            header = file.read(len(_SQLITE_HEADER))
        if header and header != _SQLITE_HEADER:
            raise _Unreadable(f"not an SQLite database (it starts with {header[:16]!r})")

    def _create_file(self) -> None:
        """Create the database file 0600 ourselves: SQLite gives -wal and -shm its mode."""
        with contextlib.suppress(FileExistsError):
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
            finally:
                os.close(fd)
            _fsync_directory(self._path.parent)

    def _open_database(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we say BEGIN and COMMIT ourselves
            check_same_thread=False,  # used by one thread at a time, see the class
        )
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise _Unreadable(f"not an SQLite database ({exc})") from None
            raise
        if verdict != "ok":
            raise _Unreadable(f"the database is damaged (quick_check: {verdict})")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self._path}: SQLite cannot use a WAL journal here ({mode})")
        conn.execute("PRAGMA synchronous = FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS store "
                    "(key TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL) WITHOUT ROWID"
                )
                conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        elif version != self.SCHEMA_VERSION:
            raise StoreError(
                f"{self._path} has store schema version {version}; this agent knows version "
                f"{self.SCHEMA_VERSION} (was it written by a newer agent?)"
            )

    def _set_aside(self, reason: str) -> None:
        """Move the unreadable database (and its -wal/-shm) aside, or raise
        :class:`_NotMovedAside`: it must never be opened and overwritten unseen."""
        destination = _aside_name(self._path)
        try:
            os.rename(self._path, destination)
        except OSError as exc:
            if self._aside_pending is None:  # report once, not at every save that retries
                self._aside_pending = reason
                self._set_aside_report(reason, None, exc)
            raise _NotMovedAside(
                f"the corrupt store file {self._path} could not be moved aside: {exc}"
            ) from exc
        for suffix in ("-wal", "-shm"):  # they belong to the old file, not to a new one
            companion = self._path.with_name(self._path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.rename(companion, destination.with_name(destination.name + suffix))
        with contextlib.suppress(OSError):
            _fsync_directory(self._path.parent)
        if self._aside_pending is None:
            self._set_aside_report(reason, destination, None)
        else:
            logger.info("moved the corrupt store file %s aside to %s", self._path, destination)

    def _set_row_aside(self, conn: sqlite3.Connection, key: str, reason: str) -> None:
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        moved_to: str | None = f"{key}.corrupt-{stamp}"
        try:
            conn.execute("UPDATE store SET key = ? WHERE key = ?", (moved_to, key))
        except sqlite3.Error as exc:
            logger.error(
                "store %s: the row %r is corrupt: %s; could not rename it (%s)",
                self._path,
                key,
                reason,
                exc,
            )
            moved_to = None
        else:
            logger.error(
                "store %s: the row %r is corrupt: %s; renamed it to %r (kept for inspection) "
                "and starting that device empty",
                self._path,
                key,
                reason,
                moved_to,
            )
        self._defer(
            StoreProblem(
                StoreCorrupt(f"store {self._path}: the row {key!r} is corrupt: {reason}"),
                key,
                {"path": str(self._path), "row": key, "moved_to": moved_to, "reason": reason},
            )
        )

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"
