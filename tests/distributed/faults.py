"""Faults a test (or ``bench/faults.py``) owns: a TCP proxy that makes a service unreachable,
and private Redis and RabbitMQ instances that can be restarted. The shared services on the
standard ports are never stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PrivateRabbit", "PrivateRedis", "TcpProxy", "quiet_port", "wait_port"]

# Ports of the services a test stops and starts again: below the kernel's ephemeral range
# (32768-60999 on Linux). While such a service is down, an outgoing connection could otherwise
# be given its port as a source port (the restart then cannot listen), and a connection attempt
# to it could meet itself (a TCP self-connect) and pass for the service being up.
_QUIET_PORTS = range(10000, 12700)
_handed_out: set[int] = set()


def quiet_port(*offsets: int) -> int:
    """A free port in ``_QUIET_PORTS``, with ``port + offset`` free too for each of ``offsets``;
    never the same twice in this process."""
    rng = random.Random()
    for _ in range(500):
        port = rng.choice(_QUIET_PORTS)
        if port in _handed_out:
            continue
        try:
            for candidate in (port, *(port + offset for offset in offsets)):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_port(port: int, timeout: float = 30.0, *, up: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                if conn.getsockname() == conn.getpeername():
                    raise ConnectionRefusedError("connected to itself, not to a service")
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} is not {'up' if up else 'down'} after {timeout}s")


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``, in a thread of its own. :meth:`cut` closes
    the listener and every connection (the service is unreachable: connection refused);
    :meth:`restore` listens again on the same port."""

    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or quiet_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cut()
        self._call(self._settle())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _settle(self) -> None:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                transport = writer.transport
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self._writers.discard(dst)
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class PrivateRedis:
    """A ``redis-server`` of our own with its append-only file on (as in production: a restart
    keeps the data). :meth:`stop` shuts it down (SIGTERM), :meth:`start` starts it again on
    the same port with the same data."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or quiet_port()
        self.dir = Path(tempfile.mkdtemp(prefix="orderbot-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(20)
        self._process = None
        wait_port(self.port, up=False)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# The node's distribution port is its AMQP port + this; its CLI tools (rabbitmqctl) use the
# distribution port + 10000 to + 10010: all three below the ephemeral range.
_DIST_OFFSET = 10000


class PrivateRabbit:
    """A RabbitMQ node of our own (its own name, ports, data and config), restartable.
    ``available()`` says whether ``rabbitmq-server`` can run here."""

    def __init__(self, *, port: int | None = None, logs_to: Path | None = None) -> None:
        self.port = port or quiet_port(_DIST_OFFSET)
        self.logs_to = logs_to  # where the node's logs are copied when it is removed
        self.node = f"orderbot-faults-{self.port}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="orderbot-rabbit-"))
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return (
            shutil.which("rabbitmq-server") is not None and shutil.which("rabbitmqctl") is not None
        )

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + _DIST_OFFSET),
            "RABBITMQ_MNESIA_BASE": str(self.dir),
            "RABBITMQ_LOG_BASE": str(self.dir),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
        }

    def start(self, timeout: float = 90.0) -> None:
        (self.dir / "plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "consumer_timeout = 21600000\n"
        )
        with contextlib.suppress(KeyError, PermissionError, OSError):
            # The server script drops to the rabbitmq user when started as root.
            shutil.chown(self.dir, "rabbitmq", "rabbitmq")
            for path in self.dir.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")
        log = (self.dir / "console.log").open("ab")
        self._process = subprocess.Popen(
            ["rabbitmq-server"], env=self._env(), stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        time.sleep(1.0)
        if self._process.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited: see {self.dir / 'console.log'}")
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "await_startup", "--timeout", str(int(timeout))],
            env=self._env(),
            capture_output=True,
            timeout=timeout + 10,
            check=False,
        )
        wait_port(self.port, timeout)

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"],
            env=self._env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if self._process is not None:
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(10)
        self._process = None
        wait_port(self.port, up=False)

    def __enter__(self) -> PrivateRabbit:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
        if self.logs_to is not None:
            # What the node said (a failed run names this directory): kept, its data is not.
            with contextlib.suppress(OSError):
                self.logs_to.mkdir(parents=True, exist_ok=True)
                for log in self.dir.glob("*.log"):
                    shutil.copy(log, self.logs_to / log.name)
        shutil.rmtree(self.dir, ignore_errors=True)
