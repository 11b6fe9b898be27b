"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK (one fake node: pods are scheduled and made Ready by KWOK's stages,
no container ever runs).

The binaries are built once per version by `make setup` (deploy/local/setup.d/45-kube.sh)
into a cache outside the clone; nothing is downloaded here.

    python -m conn_localstack.kube up|down|status|env      (make kube-up / kube-down)

`make kube-up` keeps its data under `$CONN_LOCAL_DIR/kube` and listens on the ports of
deploy/local/ports.env (CONN_KUBE_*). Tests start a private one instead (`ControlPlane` with
`KubePorts.free()` and a temporary directory) and stop it; they never touch this one.

Security shape, as on a real cluster: TLS everywhere on the API server (a private CA made with
openssl), client-certificate users for the components and the admin, a service-account
signing key pair, `--authorization-mode=RBAC`. etcd listens on loopback only, without TLS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from conn_localstack.config import DEPLOY_LOCAL, paths, port

VERSIONS_ENV = DEPLOY_LOCAL / "setup.d" / "kube" / "versions.env"
NODE_NAME = "kwok-node-0"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class KubeError(RuntimeError):
    pass


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def tools_cache() -> Path:
    """Where setup.d/45-kube.sh builds (the same rule as the script)."""
    env = os.environ.get("CONN_TOOLS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "conn"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    apiserver: Path
    controller_manager: Path
    scheduler: Path
    kwok: Path
    kwok_stages: Path

    @classmethod
    def from_cache(cls) -> Binaries:
        v, cache = versions(), tools_cache()
        kube = cache / f"kube-{v['KUBE_VERSION']}" / "bin"
        kwok = cache / f"kwok-{v['KWOK_VERSION']}"
        return cls(
            etcd=cache / f"etcd-{v['ETCD_VERSION']}" / "bin" / "etcd",
            apiserver=kube / "kube-apiserver",
            controller_manager=kube / "kube-controller-manager",
            scheduler=kube / "kube-scheduler",
            kwok=kwok / "bin" / "kwok",
            kwok_stages=kwok / "stages.yaml",
        )

    def missing(self) -> list[Path]:
        return [p for p in asdict(self).values() if not Path(p).is_file()]


def binaries_available() -> bool:
    return not Binaries.from_cache().missing()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class KubePorts:
    apiserver: int
    etcd: int
    etcd_peer: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def from_env(cls) -> KubePorts:
        """deploy/local/ports.env, overridable by the same env vars."""
        return cls(
            apiserver=port("CONN_KUBE_APISERVER_PORT"),
            etcd=port("CONN_KUBE_ETCD_PORT"),
            etcd_peer=port("CONN_KUBE_ETCD_PEER_PORT"),
            controller_manager=port("CONN_KUBE_CONTROLLER_MANAGER_PORT"),
            scheduler=port("CONN_KUBE_SCHEDULER_PORT"),
            kwok=port("CONN_KUBE_KWOK_PORT"),
        )

    @classmethod
    def free(cls) -> KubePorts:
        """Six distinct free loopback ports (for tests)."""
        picked: set[int] = set()
        while len(picked) < 6:
            picked.add(_free_port())
        a, b, c, d, e, f = sorted(picked)
        return cls(a, b, c, d, e, f)


def _port_in_use(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.3):
            return True
    except OSError:
        return False


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if res.returncode != 0:
        raise KubeError(f"openssl {' '.join(args[:2])} failed: {res.stderr.strip()[-500:]}")


class ControlPlane:
    """One control plane: its data directory, its ports, its processes (by PID file)."""

    def __init__(self, data_dir: Path, ports: KubePorts, binaries: Binaries | None = None) -> None:
        self.dir = data_dir.resolve()
        self.ports = ports
        self.bins = binaries or Binaries.from_cache()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        """Processes this object spawned (their handles outlive any PID-file doubt)."""

    # -- layout ----------------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    # -- certificates and kubeconfigs -----------------------------------------------------

    def _cert(self, name: str, subject: str, *, server: bool = False) -> None:
        if (self.pki / f"{name}.crt").exists():
            return
        ext = self.pki / f"{name}.ext"
        if server:
            sans = "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
            ext.write_text(
                f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
            )
        else:
            ext.write_text(
                "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            )
        _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=self.pki)
        _openssl(
            "req",
            "-new",
            "-key",
            f"{name}.key",
            "-subj",
            subject,
            "-out",
            f"{name}.csr",
            cwd=self.pki,
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", f"{name}.ext",
            "-out", f"{name}.crt", cwd=self.pki,
        )  # fmt: skip

    def _kubeconfig(self, path: Path, user: str) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "conn-local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.pki / f"{user}.crt"),
                        "client-key": str(self.pki / f"{user}.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "conn-local", "context": {"cluster": "conn-local", "user": user}}
            ],
            "current-context": "conn-local",
        }
        path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        path.chmod(0o600)

    def prepare(self) -> None:
        """Certificates (openssl), the service-account key pair and kubeconfigs. Idempotent."""
        for d in (self.pki, self.run_dir, self.logs, self.dir / "etcd"):
            d.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if not self.ca_file.exists():
            _openssl("genrsa", "-out", "ca.key", "2048", cwd=self.pki)
            _openssl(
                "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=conn-local-kubernetes-ca",
                "-days", "3650", "-sha256", "-out", "ca.crt", cwd=self.pki,
            )  # fmt: skip
        if not (self.pki / "sa.key").exists():
            _openssl("genrsa", "-out", "sa.key", "2048", cwd=self.pki)
            _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=self.pki)
        self._cert("apiserver", "/CN=kube-apiserver", server=True)
        self._cert("admin", "/O=system:masters/CN=conn-local-admin")
        self._cert("controller-manager", "/CN=system:kube-controller-manager")
        self._cert("scheduler", "/CN=system:kube-scheduler")
        # KWOK plays every kubelet of the fake node: node and pod status, leases, evictions.
        self._cert("kwok", "/O=system:masters/CN=kwok-controller")
        self._kubeconfig(self.admin_kubeconfig, "admin")
        for user in ("controller-manager", "scheduler", "kwok"):
            self._kubeconfig(self.dir / f"{user}.kubeconfig", user)

    # -- processes -------------------------------------------------------------------------

    def argv(self, name: str) -> list[str]:
        p, pki = self.ports, self.pki
        if name == "etcd":
            peer = f"http://127.0.0.1:{p.etcd_peer}"
            client = f"http://127.0.0.1:{p.etcd}"
            return [
                str(self.bins.etcd),
                "--name=conn-local",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=conn-local={peer}",
                "--log-level=warn",
                # A throwaway development store: durability across a power cut is not needed.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=1073741824",
            ]
        if name == "kube-apiserver":
            return [
                str(self.bins.apiserver),
                f"--etcd-servers=http://127.0.0.1:{p.etcd}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # A loopback advertise address is refused unless the endpoint reconciler is off.
                "--endpoint-reconciler-type=none",
                f"--secure-port={p.apiserver}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=false",
                "--profiling=false",
                "--v=0",
            ]
        if name == "kube-controller-manager":
            return [
                str(self.bins.controller_manager),
                f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.controller_manager}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                # In 1.37 naming an unknown controller is fatal; nodeipam needs a cluster CIDR.
                "--controllers=*,-nodeipam",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=0",
            ]
        if name == "kube-scheduler":
            return [
                str(self.bins.scheduler),
                f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.scheduler}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=0",
            ]
        if name == "kwok":
            return [
                str(self.bins.kwok),
                f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
                f"--config={self.bins.kwok_stages}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{p.kwok}",
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.1/16",
            ]
        raise KubeError(f"unknown component {name!r}")

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def pid(self, name: str) -> int | None:
        """PID of our live process `name` (PID, start time and binary must match)."""
        try:
            meta = json.loads(self._pid_file(name).read_text())
            proc = psutil.Process(int(meta["pid"]))
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if abs(proc.create_time() - float(meta["create_time"])) > 1.0:
                return None
            cmd = proc.cmdline()
            if not cmd or os.path.basename(cmd[0]) != os.path.basename(meta["argv0"]):
                return None
            return int(meta["pid"])
        except (OSError, ValueError, KeyError, psutil.Error):
            return None

    def _spawn(self, name: str) -> int:
        argv = self.argv(name)
        if not Path(argv[0]).is_file():
            raise KubeError(f"{argv[0]} not built: run `make setup` (setup.d/45-kube.sh)")
        log = (self.logs / f"{name}.log").open("ab")
        with log:
            log.write(f"\n=== {time.strftime('%F %T')} start {argv}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            )
        self._children[name] = proc
        meta = {
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "argv0": argv[0],
        }
        self._pid_file(name).write_text(json.dumps(meta))
        return proc.pid

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.logs / f"{name}.log").read_bytes()[-20000:].decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _health_url(self, name: str) -> str:
        p = self.ports
        return {
            "etcd": f"http://127.0.0.1:{p.etcd}/health",
            "kube-apiserver": f"{self.server}/readyz",
            "kube-controller-manager": f"https://127.0.0.1:{p.controller_manager}/healthz",
            "kube-scheduler": f"https://127.0.0.1:{p.scheduler}/healthz",
            "kwok": f"http://127.0.0.1:{p.kwok}/healthz",
        }[name]

    def _healthy(self, name: str) -> bool:
        url = self._health_url(name)
        try:
            if name == "kube-apiserver":
                ctx = ssl.create_default_context(cafile=str(self.ca_file))
                ctx.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
                r = httpx.get(url, verify=ctx, timeout=2)
            else:
                # Loopback health endpoints of components with self-signed serving certs.
                r = httpx.get(url, verify=False, timeout=2)
            return r.status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def healthy(self, name: str) -> bool:
        return self.pid(name) is not None and self._healthy(name)

    def _alive(self, name: str, pid: int) -> bool:
        child = self._children.get(name)
        if child is not None and child.pid == pid:
            return child.poll() is None
        return self.pid(name) == pid

    def _wait(self, name: str, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._healthy(name):
            if not self._alive(name, pid):
                raise KubeError(f"{name} exited during start-up:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise KubeError(f"{name} not healthy after {timeout:.0f}s:\n{self.log_tail(name)}")
            time.sleep(0.2)

    def _port_of(self, name: str) -> int:
        p = self.ports
        return {
            "etcd": p.etcd,
            "kube-apiserver": p.apiserver,
            "kube-controller-manager": p.controller_manager,
            "kube-scheduler": p.scheduler,
            "kwok": p.kwok,
        }[name]

    def start(self, *, timeout: float = 90.0, echo: bool = False) -> None:
        """Start what is not running yet, in order, and wait until the node is Ready and the
        controllers work. Idempotent."""
        missing = self.bins.missing()
        if missing:
            raise KubeError(
                "Kubernetes binaries not built: "
                + ", ".join(str(m) for m in missing)
                + " — run `make setup` (deploy/local/setup.d/45-kube.sh)"
            )
        self.prepare()
        try:
            for name in COMPONENTS:
                if self.pid(name) is not None and self._healthy(name):
                    if echo:
                        print(f"[kube] {name}: already running (pid {self.pid(name)})")
                    continue
                if self.pid(name) is None:
                    if _port_in_use(self._port_of(name)):
                        raise KubeError(
                            f"{name}: port {self._port_of(name)} is in use by a process "
                            "we did not start"
                        )
                    pid = self._spawn(name)
                else:
                    pid = self.pid(name) or 0
                if echo:
                    print(f"[kube] {name}: starting (pid {pid})")
                self._wait(name, pid, timeout)
            self._ensure_node(timeout)
        except BaseException:
            self.stop()
            raise
        if echo:
            print(f"[kube] ready: {self.server} (kubeconfig {self.admin_kubeconfig})")

    def _admin_client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return httpx.Client(base_url=self.server, verify=ctx, timeout=10)

    def _ensure_node(self, timeout: float) -> None:
        """The one KWOK node, and the controllers' first work (the default ServiceAccount)."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
        }
        deadline = time.monotonic() + timeout
        with self._admin_client() as c:
            r = c.post("/api/v1/nodes", json=node)
            if r.status_code not in (201, 409):
                raise KubeError(f"creating node {NODE_NAME}: HTTP {r.status_code} {r.text[:300]}")
            while True:
                n = c.get(f"/api/v1/nodes/{NODE_NAME}").json()
                ready = any(
                    x.get("type") == "Ready" and x.get("status") == "True"
                    for x in (n.get("status") or {}).get("conditions") or []
                )
                sa = c.get("/api/v1/namespaces/default/serviceaccounts/default").status_code
                if ready and sa == 200:
                    return
                if time.monotonic() > deadline:
                    raise KubeError(
                        f"node {NODE_NAME} ready={ready}, default ServiceAccount HTTP {sa} "
                        f"after {timeout:.0f}s:\n{self.log_tail('kwok')}"
                    )
                time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> list[str]:
        """SIGTERM, wait, SIGKILL; reverse order. Only processes whose PID files are ours."""
        stopped: list[str] = []
        for name in reversed(COMPONENTS):
            pid = self.pid(name)
            child = self._children.pop(name, None)
            if pid is None and child is not None and child.poll() is None:
                pid = child.pid  # ours for certain: we hold its handle
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                try:
                    psutil.Process(pid).wait(timeout)
                except psutil.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    with contextlib.suppress(psutil.Error):
                        psutil.Process(pid).wait(5)
                except psutil.Error:
                    pass
                if child is not None:
                    with contextlib.suppress(Exception):
                        child.wait(1)  # reap
                stopped.append(name)
            with contextlib.suppress(FileNotFoundError):
                self._pid_file(name).unlink()
        return stopped

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "component": name,
                "pid": self.pid(name),
                "port": self._port_of(name),
                "healthy": self.healthy(name),
            }
            for name in COMPONENTS
        ]

    def env(self) -> dict[str, str]:
        """How a client (helm, lightkube, the executor) reaches this API server as admin."""
        return {"KUBECONFIG": str(self.admin_kubeconfig)}


def local() -> ControlPlane:
    """The `make kube-up` control plane: `$CONN_LOCAL_DIR/kube`, ports from ports.env."""
    return ControlPlane(paths().root / "kube", KubePorts.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conn-kube", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    cp = local()
    try:
        if args.command == "up":
            cp.start(echo=True)
            print(f"export KUBECONFIG={cp.admin_kubeconfig}")
        elif args.command == "down":
            for name in cp.stop():
                print(f"[kube] {name}: stopped")
        elif args.command == "env":
            for k, v in cp.env().items():
                print(f"export {k}={v}")
        else:
            for row in cp.status():
                print(
                    f"{row['component']:<24} pid {row['pid'] or '-':<8} port {row['port']:<6} "
                    f"healthy {'yes' if row['healthy'] else 'no'}"
                )
    except KubeError as e:
        print(f"[kube] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
