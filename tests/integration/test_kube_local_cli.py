"""Issue 22, item 1, through the user's entry points: `make kube-up` starts the control plane
(etcd, kube-apiserver, controller-manager, scheduler, one KWOK node) in the stack's directory
on the ports of ports.env, `make kube-status` shows it, `make kube-up` again changes nothing,
and `make down` stops it by PID, leaving no process behind.

Run on a directory and ports of its own (CONN_LOCAL_DIR, CONN_KUBE_* as a user could set
them), never the `make kube-up` control plane of the checkout. The API server's /version
must name the built version (without the ldflags it says v0.0.0-master and Helm's
kubeVersion checks misfire)."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
from fixtures_kube import _require_binaries
from stack_cli import ROOT, StackCli

from conn_localstack.kube import COMPONENTS, NODE_NAME, ControlPlane, KubePorts, versions

pytestmark = [pytest.mark.integration, pytest.mark.kube]


def _run_make(stack: StackCli, target: str, timeout: float) -> tuple[int, str]:
    res = subprocess.run(
        ["make", "-s", target],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return res.returncode, res.stdout + res.stderr


def _make(stack: StackCli, target: str, timeout: float = 240.0) -> str:
    rc, out = _run_make(stack, target, timeout)
    assert rc == 0, f"make {target}: {rc}\n{out[-3000:]}"
    return out


def _plane(stack: StackCli) -> ControlPlane:
    """The same control plane as `make kube-up` in this stack's environment (to stop what
    `make down` might have left, so that a failing test leaks no process)."""
    ports = KubePorts(
        *(
            stack.port(f"CONN_KUBE_{name}_PORT")
            for name in (
                "APISERVER",
                "ETCD",
                "ETCD_PEER",
                "CONTROLLER_MANAGER",
                "SCHEDULER",
                "KWOK",
            )
        )
    )
    return ControlPlane(stack.directory / "kube", ports)


def _status(stack: StackCli) -> dict[str, tuple[int | None, bool]]:
    """component -> (pid, healthy), from `make kube-status`."""
    rows: dict[str, tuple[int | None, bool]] = {}
    for line in _make(stack, "kube-status", 60).splitlines():
        m = re.match(r"(\S+)\s+pid (\S+)\s+port (\d+)\s+healthy (yes|no)", line)
        if m:
            pid = None if m.group(2) == "-" else int(m.group(2))
            rows[m.group(1)] = (pid, m.group(4) == "yes")
    return rows


def test_make_kube_up_status_and_down() -> None:
    _require_binaries()
    with StackCli.temporary("kube-cli") as stack:
        pids: list[int] = []
        try:
            out = _make(stack, "kube-up")
            kubeconfig = stack.directory / "kube" / "admin.kubeconfig"
            assert f"export KUBECONFIG={kubeconfig}" in out, out
            status = _status(stack)
            assert set(status) == set(COMPONENTS), status
            assert all(healthy for _, healthy in status.values()), status
            pids = [pid for pid, _ in status.values() if pid is not None]
            assert len(pids) == len(COMPONENTS) and all(map(psutil.pid_exists, pids))

            # On the ports of the environment, as the built version, with its KWOK node.
            pki = stack.directory / "kube" / "pki"
            ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
            base = f"https://127.0.0.1:{stack.port('CONN_KUBE_APISERVER_PORT')}"
            with httpx.Client(base_url=base, verify=ctx, timeout=10) as http:
                assert http.get("/version").json()["gitVersion"] == versions()["KUBE_VERSION"]
                node = http.get(f"/api/v1/nodes/{NODE_NAME}").json()
                conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
                assert conditions["Ready"] == "True", json.dumps(node["status"])[:800]

            # Idempotent: a second `make kube-up` starts nothing new.
            again = _make(stack, "kube-up")
            assert "starting" not in again, again
            assert _status(stack) == status
        finally:
            rc, down = _run_make(stack, "down", 120)
            left_running = _plane(stack).stop()  # [] when `make down` stopped everything
        assert rc == 0, down
        for name in COMPONENTS:
            assert f"[kube] {name}: stopped" in down, down
        assert left_running == []
        assert [pid for pid in pids if psutil.pid_exists(pid)] == []
        assert all(pid is None for pid, _ in _status(stack).values())
        assert not list(Path(stack.directory / "kube" / "run").glob("*.json"))
