"""The lifecycle every local server shares: child process, work directory, context manager."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalService"]


class LocalService(ABC):
    """A server run as a child process in a work directory.

    Subclasses implement `start()` (idempotent, waits until ready) and `stop(timeout)`.
    `close()` stops it and removes a work directory this object created; the process is also
    stopped at interpreter exit, so a crashed test run leaves no server behind.
    """

    def __init__(self, workdir: Path | str | None, *, prefix: str) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=prefix))
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        atexit.register(self._atexit)

    @property
    def running(self) -> bool:
        """Whether the server process is alive (not necessarily ready)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self.running and self._proc else None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    @abstractmethod
    def start(self) -> Self:
        """Start the server (if not running) and wait until it is ready."""

    @abstractmethod
    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully; force after `timeout` seconds."""

    def restart(self) -> Self:
        """Stop gracefully and start again on the same port(s) and data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete the work directory if this object created it."""
        self.stop()
        if self._own_workdir and not self._closed:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._closed = True
        atexit.unregister(self._atexit)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
