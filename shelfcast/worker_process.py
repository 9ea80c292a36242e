"""A stream worker in a child process: started with the given settings, stopped or killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from runtime.errors import ServiceUnavailable
from runtime.settings import Settings, settings_env

__all__ = ["WorkerProcess"]

# Faust logs the first once the worker has joined and recovered its tables; the batch engine
# (streams.engine.READY_LINE) logs the second once it has its first assignment and its state.
READY_MARKS = ("Worker]: Ready", "shelfcast batch engine: ready")


# SHELFCAST_* variables that are not settings and pass on to the child as they are: the
# host's cache (runtime.cache; compiled LightGBM trees) and the compiled trees' off switch.
PROCESS_ENV = frozenset({"SHELFCAST_CACHE_DIR", "SHELFCAST_COMPILED_TREES"})


class WorkerProcess:
    """`shelfcast worker` as a subprocess whose log goes to `log_path`."""

    def __init__(self, settings: Settings, log_path: Path, *, name: str = "worker",
                 env: Mapping[str, str] | None = None, command: str = "worker") -> None:
        self.settings = settings
        self.log_path = log_path
        self.name = name
        self.command = command  # the `shelfcast` subcommand to run
        self.env = dict(env or {})  # extra variables on top of the settings' SHELFCAST_* ones
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SHELFCAST_") or k in PROCESS_ENV}
        env.update(settings_env(self.settings))
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "shelfcast", self.command],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        """Started and not ended."""
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self._proc is None else self._proc.poll()

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Block until the worker has joined its group and recovered tables; returns seconds."""
        assert self._proc is not None, "start() first"
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            exited = self._proc.poll() is not None
            # the log before the exit code: a worker may get ready and end (an armed fault on
            # its 3rd batch, a backlog waiting) between two polls; it did get ready
            with self.log_path.open("rb") as log:
                log.seek(self._offset)
                text = log.read()
                if any(mark.encode() in text for mark in READY_MARKS):
                    return time.monotonic() - t0
            if exited:
                raise ServiceUnavailable(
                    f"{self.name} exited with code {self._proc.returncode}; "
                    f"see {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise ServiceUnavailable(
            f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}:\n"
            f"{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (graceful: the worker commits and leaves the group), SIGKILL if it hangs."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self._proc.returncode
        self._proc = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
