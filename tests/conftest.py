from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_harness import Kernels

from jupyter_agent import SqliteStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


@pytest.fixture
def kernels(tmp_path: Path, db: Path) -> Iterator[Kernels]:
    """Real kernels whose default store is ``db``; every one is shut down after the test."""
    pool = Kernels(tmp_path, db)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    """The store as the test process reads it (it registers no runtime)."""
    st = SqliteStore(db)
    try:
        yield st
    finally:
        st.close()
