"""The store box: sessions, events, snapshots, blobs and commands in one SQLite file."""

from ._paths import default_store_path
from ._schema import LATEST as SCHEMA_VERSION
from ._sqlite import STATUSES, Command, SessionRow, SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Command",
    "SessionRow",
    "SqliteStore",
    "default_store_path",
]
