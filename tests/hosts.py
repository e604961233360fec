"""A virtual LAN of hosts on one machine, for tests that need real machines talking over TCP.

A master and workers on loopback share one address, one hostname and one network: they cannot
show name resolution between hosts, a master bound to 0.0.0.0, or one host's link failing.
Here each host is a network namespace with its own address on 10.77.0.0/24, its own hostname
(as a container has) and an /etc/hosts naming every other host, plugged into a bridge. The
bridge lives in a namespace of its own, so nothing in the machine's own network changes and
the subnet cannot clash with anything: traffic never leaves the LAN.

    with virtual_lan(["target", "master", "worker-1"]) as lan:
        lan["master"].start([...], cwd=..., env=..., stdout=..., stderr=...)
        lan.cut("worker-1")   # its cable pulled: the process runs on, nothing gets through
        lan.cut_between("worker-1", "master")  # those two no longer reach each other

Leaving the `with` ends every process in every host (by PID, including grandchildren that
started sessions of their own) and deletes the namespaces, veths, bridge and /etc/netns files.
Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2; otherwise `NamespacesUnavailable`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SUBNET = "10.77.0"  # /24; private to this LAN's bridge, so a fixed one is safe
BRIDGE = "br0"
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*
COMMAND_TIMEOUT_S = 10
END_GRACE_S = 5.0
_serial = itertools.count(1)  # several LANs in one test process get distinct names
# Host.fetch's process: a request per line of JSON in, its answer as a line of JSON out.
FETCHER = """
import json, sys, urllib.error, urllib.request
for line in sys.stdin:
    ask = json.loads(line)
    request = urllib.request.Request(ask["url"], method=ask["method"], headers=ask["headers"],
                                     data=ask["body"].encode() or None)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except OSError as error:
        status, body = 0, str(error).encode()
    print(json.dumps({"status": status, "body": body.decode(errors="replace")}), flush=True)
"""


class NamespacesUnavailable(Exception):
    """Network namespaces cannot be created here (not root, no iproute2, a restricted kernel)."""


def ip(*args: str) -> str:
    """Run `ip ARGS` and return its output; a failure raises with ip's own message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class Host:
    """One machine on the LAN: a network namespace, its address, and the processes it runs."""

    def __init__(self, name: str, namespace: str, address: str, bridge_port: str):
        self.name, self.namespace, self.address = name, namespace, address
        self.bridge_port = bridge_port  # its veth's other end, on the bridge
        self.processes: list[subprocess.Popen] = []
        self._fetcher: subprocess.Popen | None = None  # makes the requests of fetch()

    def __repr__(self) -> str:
        return f"Host({self.name} {self.address} in {self.namespace})"

    def command(self, argv: list[str]) -> list[str]:
        """argv as run on this host: in its network namespace, under its own hostname."""
        # unshare and sh exec in turn, so the PID Popen sees is the program's own.
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *argv]

    def start(self, argv: list[str], *, cwd: Path, env: dict[str, str], stdout: Path,
              stderr: Path) -> subprocess.Popen:
        """Start a long-running program on this host; it is ended when the LAN is torn down."""
        with open(stdout, "w") as out, open(stderr, "w") as err:
            process = subprocess.Popen(self.command(argv), cwd=cwd, env=env, stdout=out,
                                       stderr=err, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def get_json(self, url: str) -> dict:
        """GET url from this host (the test process itself is not on the LAN)."""
        status, body = self.fetch("GET", url)
        if status != 200:
            raise RuntimeError(f"GET {url} from {self.name}: {status} {body[-500:]}")
        return json.loads(body)

    def fetch(self, method: str, url: str, body: str = "",
              headers: dict[str, str] | None = None) -> tuple[int, str]:
        """An HTTP request from this host: (status, body); status 0 when nothing answered.

        One Python process on the host makes them all, asked line by line: a process each
        cost ~80 ms of CPU, and tests that poll made hundreds."""
        if self._fetcher is None or self._fetcher.poll() is not None:
            self._fetcher = subprocess.Popen(
                self.command([sys.executable, "-c", FETCHER]), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                start_new_session=True)
            self.processes.append(self._fetcher)
        ask = {"method": method, "url": url, "body": body, "headers": headers or {}}
        self._fetcher.stdin.write(json.dumps(ask) + "\n")
        self._fetcher.stdin.flush()
        answer = self._fetcher.stdout.readline()
        if not answer:
            raise RuntimeError(f"{method} {url} from {self.name}: the fetcher left")
        answer = json.loads(answer)
        return answer["status"], answer["body"]

    def sent_to(self, port: int) -> tuple[int, float]:
        """Bytes this host's established TCP connections to remote port `port` have sent, and
        the seconds since the latest of them sent anything (as the kernel read them: between
        the call and its return)."""
        sent, since_s = 0, float("inf")
        for line in self._sockets("-Htin", "state", "established", f"dport = :{port}"):
            fields = dict(field.split(":", 1) for field in line.split()
                          if field.startswith(("bytes_sent:", "lastsnd:")))
            sent += int(fields.get("bytes_sent", 0))
            # ss leaves out a lastsnd of 0 ms: a connection that sent this very millisecond
            # (read as "never", the report just seen was dated -inf and the worker cut at once)
            since_s = min(since_s, int(fields.get("lastsnd", 0)) / 1000)
        return sent, since_s

    def listening(self, port: int) -> bool:
        return bool(self._sockets("-Hltn", f"sport = :{port}"))

    def peers(self, port: int) -> set[str]:
        """Addresses with an established TCP connection to this host's local port."""
        lines = self._sockets("-Htn", "state", "established", f"sport = :{port}")
        return {line.split()[-1].rsplit(":", 1)[0] for line in lines}

    def _sockets(self, *args: str) -> list[str]:
        result = subprocess.run(["ss", "-N", self.namespace, *args], capture_output=True,
                                text=True, timeout=COMMAND_TIMEOUT_S)
        return result.stdout.splitlines()

    def kill(self) -> None:
        """Every process on this host dies at once (SIGKILL), as in a container killed; the
        host and its network stay (the kernel closes the processes' connections)."""
        for pid in (int(pid) for pid in ip("netns", "pids", self.namespace).split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop_processes(self) -> None:
        """Ask what was started here to stop (SIGTERM); `end_processes` makes sure."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()

    def end_processes(self, deadline: float) -> None:
        """Reap what was started here (killed if still running at `deadline`), then end
        anything else left in the namespace, by PID."""
        for process in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):  # the fetcher's
                if pipe is not None:
                    pipe.close()
        for _ in range(int(END_GRACE_S / 0.1)):
            pids = [int(pid) for pid in ip("netns", "pids", self.namespace).split()]
            if not pids:
                return
            for pid in pids:  # e.g. a child that started a session of its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        raise RuntimeError(f"processes {pids} would not end in {self.namespace}")


class Lan:
    """Hosts joined by one bridge; `lan[name]` is a host, `lan.cut(name)` pulls its cable."""

    def __init__(self, names: list[str], aliases: dict[str, str] | None = None):
        prefix = f"esr-{os.getpid()}-{next(_serial)}"
        self.aliases = aliases or {}  # other names of a host, {alias: host name}, as Compose's
        self.bridge_namespace = f"{prefix}-lan"
        self.hosts = {name: Host(name, f"{prefix}-{name}", f"{SUBNET}.{i}",
                                 f"p{i}-{name}"[:15])
                      for i, name in enumerate(names, start=1)}
        self.created: list[str] = []  # namespaces, in the order made, for the teardown

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def build(self) -> None:
        try:
            ip("netns", "add", self.bridge_namespace)
        except (OSError, RuntimeError) as error:
            raise NamespacesUnavailable(str(error)) from None
        self.created.append(self.bridge_namespace)
        lan = ("-n", self.bridge_namespace)
        ip(*lan, "link", "add", BRIDGE, "type", "bridge")
        ip(*lan, "link", "set", BRIDGE, "up")
        for host in self.hosts.values():
            self._plug_in(host)

    def _plug_in(self, host: Host) -> None:
        ip("netns", "add", host.namespace)
        self.created.append(host.namespace)
        self._write_etc_hosts(host)
        # The veth is made on the bridge's side, its peer goes straight into the host as eth0.
        ip("-n", self.bridge_namespace, "link", "add", host.bridge_port, "type", "veth",
           "peer", "name", "eth0", "netns", host.namespace)
        ip("-n", self.bridge_namespace, "link", "set", host.bridge_port, "master", BRIDGE, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")

    def _write_etc_hosts(self, host: Host) -> None:
        folder = NETNS_ETC / host.namespace
        folder.mkdir(parents=True, exist_ok=True)
        names = "".join(
            f"{h.address}\t" + " ".join([h.name, *(a for a, n in self.aliases.items()
                                                 if n == h.name)]) + "\n"
            for h in self.hosts.values())
        (folder / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{names}")

    def cut(self, name: str) -> None:
        """Pull a host's cable: its bridge port goes down; its processes run on, unreachable."""
        ip("-n", self.bridge_namespace, "link", "set", self.hosts[name].bridge_port, "down")

    def cut_between(self, name: str, other: str) -> None:
        """Drop every packet between two hosts, both ways, at the first one's end (a firewall
        rule in its namespace): each still reaches every other host."""
        host, address = self.hosts[name], self.hosts[other].address
        rules = (f"add table inet esr_cut\n"
                 f"add chain inet esr_cut in {{ type filter hook input priority 0; }}\n"
                 f"add chain inet esr_cut out {{ type filter hook output priority 0; }}\n"
                 f"add rule inet esr_cut in ip saddr {address} drop\n"
                 f"add rule inet esr_cut out ip daddr {address} drop\n")
        subprocess.run(["ip", "netns", "exec", host.namespace, "nft", "-f", "-"], input=rules,
                       text=True, check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)

    def tear_down(self) -> None:
        """Everything goes, whatever state the build or the test left it in."""
        problems = []
        hosts = [host for host in self.hosts.values() if host.namespace in self.created]
        for host in hosts:  # all at once, so the grace periods run side by side
            host.stop_processes()
        deadline = time.monotonic() + END_GRACE_S
        for host in hosts:
            try:
                host.end_processes(deadline)
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                problems.append(f"{host.name}: {error}")
        # Deleting a host's namespace deletes its veth pair; the bridge's, the bridge.
        for namespace in reversed(self.created):
            try:
                ip("netns", "delete", namespace)
            except RuntimeError as error:
                problems.append(str(error))
            shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if this LAN was its last user
        if problems:
            raise RuntimeError("the virtual LAN was not fully torn down: " + "; ".join(problems))


@contextlib.contextmanager
def virtual_lan(names: list[str], aliases: dict[str, str] | None = None) -> Iterator[Lan]:
    """A LAN with one host per name (also its hostname), and other names for some of them
    ({alias: host name}); gone again on leaving the `with`."""
    lan = Lan(names, aliases)
    try:
        lan.build()
        yield lan
    finally:
        lan.tear_down()
