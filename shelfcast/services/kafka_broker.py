"""A real Apache Kafka 4.x broker (KRaft, one node) run locally from Maven Central jars, no Docker.

`ensure_kafka_jars()` fetches the broker's jars once into a cache directory with Maven (the pom
ships next to this module); `LocalKafka` formats a KRaft log directory and runs
`kafka.Kafka` as broker+controller on free 127.0.0.1 ports, waits until a client sees it, and can
be stopped, killed and started again on the same ports and data (for the chaos suite).
With a `SecureListener` it also serves a SASL_SSL listener (SCRAM users written into the KRaft
metadata at format time, a PEM key store) for the security tests.
The module also holds the process helpers the other local services share.

CLI: `python -m shelfcast.services.kafka_broker --fetch` pre-fetches the jars; `--warm` starts
and stops a broker once (caches its class-data archive); `--run` keeps one up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from runtime.cache import cache_base
from shelfcast.services.local_service import LocalService

__all__ = [
    "KAFKA_VERSION",
    "POM_PATH",
    "BrokerStartError",
    "LocalKafka",
    "SecureListener",
    "default_cache_dir",
    "ensure_kafka_jars",
    "free_port",
    "kafka_ready",
    "wait_kafka_ready",
]

_log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
POM_PATH = Path(__file__).with_name("kafka-broker-pom.xml")
_MARKER = ".complete"
_REQUIRED_JARS = (f"kafka_2.13-{KAFKA_VERSION}.jar", f"kafka-tools-{KAFKA_VERSION}.jar")


class BrokerStartError(RuntimeError):
    """A local broker (or its jars) could not be made ready; the message carries the log tail."""


# --------------------------------------------------------------------------- shared helpers


def free_port(host: str = "127.0.0.1", exclude: Sequence[int] = ()) -> int:
    """Return a TCP port that is free on `host` right now (bound to `host` only)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port
    raise OSError(f"no free port found on {host}")


def log_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process(
    proc: subprocess.Popen[bytes] | None, timeout: float, *, kill: bool = False
) -> None:
    """SIGTERM (or SIGKILL when `kill`) a child, SIGKILL it after `timeout`, and always reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _log.warning("pid %s ignored SIGTERM for %.0fs, killing it", proc.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    proc.wait()


async def _probe(bootstrap: str, timeout: float) -> bool:
    from aiokafka import AIOKafkaClient  # imported on demand: it is not free

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1000, int(timeout * 1000)),
        metadata_max_age_ms=1000,
        retry_backoff_ms=100,
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return bool(client.cluster.brokers())
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def kafka_ready(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a Kafka client can bootstrap from `bootstrap` and sees at least one broker.

    Runs the aiokafka client on its own event loop in a helper thread, so it can be called from
    sync code and from inside a running event loop alike.
    """
    result: list[bool] = [False]

    def run() -> None:
        result[0] = asyncio.run(_probe(bootstrap, timeout))

    thread = threading.Thread(target=run, name="kafka-ready-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    return result[0]


def wait_kafka_ready(
    bootstrap: str,
    timeout: float,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    what: str = "Kafka broker",
) -> None:
    """Poll until `bootstrap` answers metadata; raise `BrokerStartError` (with the log) if not."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise BrokerStartError(
                f"{what} exited with code {proc.returncode} before it was ready "
                f"({bootstrap}); log {log_path}:\n{tail}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            tail = log_tail(log_path) if log_path else ""
            raise BrokerStartError(
                f"{what} at {bootstrap} not ready after {timeout:.0f}s; log {log_path}:\n{tail}"
            )
        if _tcp_open(bootstrap) and kafka_ready(bootstrap, timeout=min(3.0, max(remaining, 0.5))):
            return
        time.sleep(0.2)


def _tcp_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- jars


def default_cache_dir() -> Path:
    """The jar cache: `$SHELFCAST_CACHE_DIR/kafka-<v>`, else `~/.cache/shelfcast/kafka-<v>`."""
    return cache_base() / f"kafka-{KAFKA_VERSION}"


def _jars_complete(lib: Path, marker: Path) -> bool:
    return marker.is_file() and all((lib / jar).is_file() for jar in _REQUIRED_JARS)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_kafka_jars(
    cache_dir: Path | str | None = None, *, mvn: str | None = None, timeout: float = 1200.0
) -> Path:
    """Fetch the Kafka broker jars with Maven once; return the `lib` directory holding them.

    Skipped when the cache already holds a complete download (marker file present); a half
    download (no marker) is redone. Safe against concurrent callers (file lock).
    """
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    lib, marker = cache / "lib", cache / _MARKER
    if _jars_complete(lib, marker):
        return lib
    with _file_lock(cache / ".lock"):
        if _jars_complete(lib, marker):
            return lib
        mvn_bin = mvn or shutil.which("mvn")
        if not mvn_bin:
            raise BrokerStartError(
                "Maven (`mvn`) is needed once to fetch the Kafka jars from Maven Central; "
                "install it (Debian: apt-get install -y maven openjdk-17-jre-headless)"
            )
        marker.unlink(missing_ok=True)
        staging = cache / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn_bin, "-q", "-B", "-f", str(POM_PATH),
            "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        _log.info("fetching Kafka %s jars: %s", KAFKA_VERSION, " ".join(cmd))
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not all((staging / j).is_file() for j in _REQUIRED_JARS):
            raise BrokerStartError(
                f"fetching the Kafka jars failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        shutil.rmtree(cache / "storage-template", ignore_errors=True)
        for archive in cache.glob("cds-*"):  # class archives are tied to the old jars
            archive.unlink(missing_ok=True)
        staging.rename(lib)
        marker.write_text(f"kafka {KAFKA_VERSION}\n")
        _log.info("Kafka jars fetched in %.1fs into %s", time.monotonic() - started, lib)
    return lib


# --------------------------------------------------------------------------- broker


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL client listener: TLS with a PEM key store, SCRAM authentication.

    `keystore_pem` holds the broker's private key (unencrypted PKCS#8) followed by its
    certificate chain; `users` maps SCRAM user names to passwords (written into the cluster
    metadata when the storage is formatted). The broker still talks to itself over PLAINTEXT
    on 127.0.0.1 (inter-broker and controller listeners); clients use `secure_bootstrap`.
    """

    keystore_pem: str = field(repr=False)
    users: Mapping[str, str] = field(repr=False)
    mechanism: str = "SCRAM-SHA-512"

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format --add-scram` arguments, one per user."""
        args: list[str] = []
        for name, password in self.users.items():
            if not name.isalnum() or '"' in password or "," in password or "]" in password:
                raise ValueError(f"SCRAM user {name!r}: keep names alphanumeric and passwords "
                                 "free of quotes, commas and brackets")
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args



def _kafka_uuid() -> str:
    """A Kafka `Uuid` (url-safe base64 of 16 random bytes, no padding) for the cluster id."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class LocalKafka(LocalService):
    """One Apache Kafka 4.x node (KRaft broker+controller) on 127.0.0.1, run from cached jars.

    Use as a context manager or call `start()` / `close()`. `stop()` + `start()` (or
    `restart()`) bring it back on the same ports with the same data; `kill()` crashes it
    (SIGKILL) for chaos tests. `close()` stops it and removes a workdir it created itself.
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        cache_dir: Path | str | None = None,
        heap: str = "512m",
        num_partitions: int = 4,
        properties: Mapping[str, str | int] | None = None,
        jvm_options: Sequence[str] = (),
        startup_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        java: str = "java",
        class_data_sharing: bool = True,
        secure: SecureListener | None = None,
    ) -> None:
        super().__init__(workdir, prefix="shelfcast-kafka-")
        self.port = port or free_port()
        self.controller_port = controller_port or free_port(exclude=(self.port,))
        self.secure = secure
        self.secure_port = (
            free_port(exclude=(self.port, self.controller_port)) if secure is not None else None
        )
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.heap = heap
        self.num_partitions = num_partitions
        self.extra_properties = dict(properties or {})
        self.jvm_options = list(jvm_options)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.java = java
        self.class_data_sharing = class_data_sharing
        self.log_path = self.workdir / "kafka.log"
        self.config_path = self.workdir / "server.properties"
        self.data_dir = self.workdir / "data"
        self.startup_seconds: float | None = None
        self._cds_dump: tuple[Path, Path] | None = None  # (being written, final) class archive

    # ---- info
    @property
    def bootstrap(self) -> str:
        """`host:port` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """`host:port` of the SASL_SSL listener (only with `secure=`)."""
        if self.secure_port is None:
            raise BrokerStartError("this broker has no SASL_SSL listener (pass secure=...)")
        return f"127.0.0.1:{self.secure_port}"

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.bootstrap!r}, running={self.running})"

    # ---- lifecycle
    def start(self) -> Self:
        """Start the broker (formatting storage the first time) and wait until it is ready."""
        self._check_open()
        if self.running:
            return self
        began = time.monotonic()
        lib = ensure_kafka_jars(self.cache_dir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format(lib)
        classpath = str(lib / "*")
        cmd = [
            self.java, f"-Xmx{self.heap}", "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            *self._cds_options(lib), *self.jvm_options,
            "-cp", classpath, "kafka.Kafka", str(self.config_path),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to the test run does not hit it mid-teardown
            )
        try:
            wait_kafka_ready(
                self.bootstrap,
                self.startup_timeout,
                proc=self._proc,
                log_path=self.log_path,
                what=f"Kafka {KAFKA_VERSION}",
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        _log.info("Kafka %s ready at %s in %.1fs", KAFKA_VERSION, self.bootstrap,
                  self.startup_seconds)  # fmt: skip
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: SIGTERM, SIGKILL after `timeout`; data and ports are kept."""
        proc, self._proc = self._proc, None
        stop_process(proc, self.stop_timeout if timeout is None else timeout)
        self._finish_cds_dump(proc)

    def kill(self) -> None:
        """Crash the broker (SIGKILL) — data stays; `start()` recovers it."""
        proc, self._proc = self._proc, None
        stop_process(proc, 10.0, kill=True)
        self._finish_cds_dump(proc)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            stop_process(self._proc, 5.0)

    # ---- internals
    def properties(self) -> dict[str, str]:
        """The full `server.properties` this broker runs with."""
        props: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir),
            "num.partitions": self.num_partitions,
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            # after a crash the restarted controller waits out the old broker session before
            # the broker may re-register: 4 s instead of the default 9 s
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 500,
        }
        if self.secure is not None:
            props.update(self._secure_properties(self.secure))
        props.update(self.extra_properties)
        return {k: str(v) for k, v in props.items()}

    def _secure_properties(self, secure: SecureListener) -> dict[str, str | int]:
        name = "sasl_ssl"  # listener names are lower-cased in per-listener keys
        endpoint = f"SASL_SSL://127.0.0.1:{self.secure_port}"
        keystore = self.workdir / "keystore.pem"
        keystore.write_text(secure.keystore_pem)
        keystore.chmod(0o600)
        mech = secure.mechanism.lower()
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},{endpoint},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},{endpoint}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,"
            "CONTROLLER:PLAINTEXT",
            f"listener.name.{name}.sasl.enabled.mechanisms": secure.mechanism,
            f"listener.name.{name}.{mech}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"listener.name.{name}.ssl.keystore.type": "PEM",
            f"listener.name.{name}.ssl.keystore.location": str(keystore),
        }  # fmt: skip

    def _write_config(self) -> None:
        lines = [f"{k}={v}" for k, v in self.properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _cds_options(self, lib: Path) -> list[str]:
        """JVM flags for an application class-data-sharing archive of the broker's classes.

        Loading ~90 jars' classes dominates broker start-up on a small, busy machine; the first
        broker that stops cleanly dumps an archive into the jar cache (keyed by the JVM build)
        and later starts map it (measured 12-21 s -> 5-8 s under load).
        """
        self._cds_dump = None
        java = shutil.which(self.java)
        if not self.class_data_sharing or java is None:
            return []
        real = Path(java).resolve()
        st = real.stat()
        key = hashlib.sha1(f"{real}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        archive = lib.parent / f"cds-{key}.jsa"
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        pending = lib.parent / f"cds-{key}.{os.getpid()}-{uuid.uuid4().hex[:6]}.partial"
        self._cds_dump = (pending, archive)
        return [f"-XX:ArchiveClassesAtExit={pending}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]

    def _finish_cds_dump(self, proc: subprocess.Popen[bytes] | None) -> None:
        """Keep the archive a cleanly exited JVM dumped; drop one a SIGKILL may have cut short."""
        if self._cds_dump is None or proc is None:
            return
        pending, archive = self._cds_dump
        self._cds_dump = None
        clean = proc.returncode in (0, 143, -signal.SIGTERM)
        if clean and pending.is_file() and pending.stat().st_size > 0 and not archive.exists():
            pending.replace(archive)
        pending.unlink(missing_ok=True)

    def _format(self, lib: Path) -> None:
        """Format the KRaft log directory.

        StorageTool's output (`bootstrap.checkpoint` + `meta.properties`) depends on neither
        paths nor ports, so it is made once per jar cache and copied, with a fresh cluster id
        and directory id, instead of paying a JVM start per broker.
        """
        if self.secure is not None:
            # SCRAM credentials live in the bootstrap metadata: format this broker itself
            self._run_storage_tool(lib, self.data_dir, self.secure.scram_arguments())
            return
        template = lib.parent / "storage-template"
        checkpoint = template / "bootstrap.checkpoint"
        if not checkpoint.is_file():
            with _file_lock(lib.parent / ".lock"):
                if not checkpoint.is_file():
                    self._run_storage_tool(lib, template)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, self.data_dir / "bootstrap.checkpoint")
        meta = (
            f"#\n#Written by shelfcast (as kafka-storage format would)\n"
            f"node.id={self.properties()['node.id']}\ndirectory.id={_kafka_uuid()}\n"
            f"version=1\ncluster.id={_kafka_uuid()}\n"
        )
        (self.data_dir / "meta.properties.tmp").write_text(meta)
        (self.data_dir / "meta.properties.tmp").replace(self.data_dir / "meta.properties")

    def _run_storage_tool(self, lib: Path, target: Path, extra: Sequence[str] = ()) -> None:
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        props = {**self.properties(), "log.dirs": str(staging / "data")}
        config = staging / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        cmd = [
            self.java, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", str(lib / "*"), "kafka.tools.StorageTool", "format",
            "-t", _kafka_uuid(), "-c", str(config), *extra,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        shown = " ".join(cmd[: len(cmd) - len(extra)])  # --add-scram carries passwords
        with open(self.log_path, "a") as log:
            log.write(f"=== format: {shown}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0 or not (staging / "data" / "bootstrap.checkpoint").is_file():
            raise BrokerStartError(
                f"formatting Kafka storage failed (exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        shutil.rmtree(target, ignore_errors=True)
        (staging / "data").rename(target)
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`--fetch`: download the jars; `--run`: run a broker until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m shelfcast.services.kafka_broker")
    parser.add_argument("--fetch", action="store_true", help="fetch the Kafka jars into the cache")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="start and stop a broker once so its class-data archive is cached",
    )
    parser.add_argument("--run", action="store_true", help="run a local broker until Ctrl-C")
    parser.add_argument("--port", type=int, default=None, help="PLAINTEXT port for --run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not (args.fetch or args.warm or args.run):
        parser.print_help()
        return 2
    if args.fetch:
        began = time.monotonic()
        lib = ensure_kafka_jars()
        jars = len(list(lib.glob("*.jar")))
        print(f"Kafka {KAFKA_VERSION} jars: {lib} ({jars} jars, {time.monotonic() - began:.1f}s)")
    if args.warm:
        began = time.monotonic()
        with LocalKafka() as kafka:
            ready = kafka.startup_seconds or 0.0
        print(f"Kafka broker warmed: ready in {ready:.1f}s, {time.monotonic() - began:.1f}s in all")
    if args.run:
        with LocalKafka(port=args.port) as kafka:
            print(f"Kafka {KAFKA_VERSION} ready: bootstrap={kafka.bootstrap} log={kafka.log_path}")
            sys.stdout.flush()
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                while kafka.running:
                    time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
