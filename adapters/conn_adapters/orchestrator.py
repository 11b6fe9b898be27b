"""Orchestrator over the Kubernetes apps/v1 Deployment API.

Region -> namespace, pool/tier -> Deployment (both mappings configurable).
Drain = scale the Deployment to 0 through the `scale` subresource (scale_pool, the
recorded undo of a drain, scales it back to the size recorded before); restart =
rollout restart (patch `spec.template.metadata.annotations
["kubectl.kubernetes.io/restartedAt"]`, as `kubectl rollout restart` does).
Every write carries `metadata.resourceVersion`; a 409 Conflict is retried with a
fresh read. Idempotency: the key is recorded in the Deployment annotation
`conn.dev/idempotency-key` (the most recent keys, space-separated) and a call
whose key is already there does nothing.

Tier `generation` = completed rollouts = `deployment.kubernetes.io/revision` - 1,
minus one while a rollout of the current revision is still in progress. `restarting` and
`healthy` follow `kubectl rollout status`: a rollout is done once the controller has observed
the latest spec, every replica is updated, no old replica is left and all are available; a
Deployment past its progress deadline is never healthy.

Safety at the edge: region -> namespace and pool/tier -> Deployment names must be DNS-1123
labels, checked before any request, so a name can never change the URL it is used in
(`a/b`, `..`, `%2F`...). A paused Deployment refuses a restart (the template would change but
nothing would roll), and an RBAC denial is a clear, non-retriable PortError.

Dry run (`preview_scale`, `preview_restart`): the same patch sent with `dryRun=All`, so the
API server validates it and answers with the object it would store, and persists nothing.

`SimulatorOrchestrator` speaks the same API with httpx (the simulator's
Kubernetes-shaped API); `KubernetesOrchestrator` uses lightkube against a real
API server.
"""

from __future__ import annotations

import contextvars
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import httpx2
from lightkube import ApiError as KubeApiError
from lightkube import AsyncClient
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

from conn_adapters._common import bounded, now_utc, raise_for_status
from conn_core.ports import ActionResult, PortError, TierState, WorkerPoolState
from conn_schemas.undo import ChangePreview, FieldChange
from conn_schemas.values import Action, DrainWorkerPool, RestartDependencyTier, ScaleWorkerPool

IDEMPOTENCY_ANNOTATION = "conn.dev/idempotency-key"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RESTART_KEY = "conn.dev/restart-key"
"""Pod-template annotation carrying the directive's key: every directed restart
changes the template (so Kubernetes really rolls the pods), even two within the
same second, where `restartedAt` alone would be identical and restart nothing."""
REVISION = "deployment.kubernetes.io/revision"
KEEP_KEYS = 16
RBAC_HINT = "the executor needs get and patch on deployments and deployments/scale (apps)"

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_dns1123_label(value: str, what: str) -> str:
    """`value` if it is a DNS-1123 label (what Kubernetes requires of namespaces and what Conn
    requires of Deployment names); otherwise a non-retriable PortError, before any I/O."""
    if not isinstance(value, str) or _DNS1123_LABEL.fullmatch(value) is None:
        raise PortError(
            f"{what} {value!r} is not a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters); refused "
            "before any request"
        )
    return value


class Conflict(Exception):
    """A write lost an optimistic-concurrency race (HTTP 409)."""


class DeploymentOrchestrator(ABC):
    """The port logic; subclasses provide the three HTTP calls."""

    def __init__(
        self,
        *,
        namespaces: Mapping[str, str] | None = None,
        deployments: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        conflict_retries: int = 5,
    ) -> None:
        self.namespaces = {
            region: check_dns1123_label(ns, f"namespace for region {region!r}")
            for region, ns in (namespaces or {}).items()
        }
        self.deployments = {
            target: check_dns1123_label(name, f"Deployment name for {target!r}")
            for target, name in (deployments or {}).items()
        }
        self.timeout = timeout
        self.conflict_retries = conflict_retries

    # transport ------------------------------------------------------------

    @abstractmethod
    async def _get(self, ns: str, name: str) -> dict[str, Any]: ...

    @abstractmethod
    async def _patch(
        self, ns: str, name: str, body: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Merge-patch the Deployment; raise Conflict on 409. `dry_run`: the server
        validates and answers with the result but persists nothing (dryRun=All)."""

    @abstractmethod
    async def _patch_scale(
        self, ns: str, name: str, body: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Merge-patch the Deployment's scale subresource; raise Conflict on 409."""

    async def aclose(self) -> None:
        return None

    # helpers --------------------------------------------------------------

    def _where(self, name: str, region: str) -> tuple[str, str]:
        """(namespace, Deployment), both checked: nothing else ever reaches a URL."""
        ns = check_dns1123_label(self.namespaces.get(region, region), "namespace")
        return ns, check_dns1123_label(self.deployments.get(name, name), "Deployment name")

    @staticmethod
    def _keys(d: dict[str, Any]) -> list[str]:
        ann = (d.get("metadata") or {}).get("annotations") or {}
        return str(ann.get(IDEMPOTENCY_ANNOTATION, "")).split()

    @staticmethod
    def _rv(d: dict[str, Any]) -> str:
        return str(d["metadata"]["resourceVersion"])

    def _with_key(self, d: dict[str, Any], key: str) -> str:
        return " ".join([*self._keys(d), key][-KEEP_KEYS:])

    @staticmethod
    def _pool_state(pool: str, region: str, d: dict[str, Any]) -> WorkerPoolState:
        status = d.get("status") or {}
        return WorkerPoolState(
            pool=pool,
            region=region,
            desired_replicas=int((d.get("spec") or {}).get("replicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            observed_at=now_utc(),
        )

    @staticmethod
    def _tier_state(tier: str, region: str, d: dict[str, Any]) -> TierState:
        meta, spec, status = d["metadata"], d.get("spec") or {}, d.get("status") or {}
        # An unset spec.replicas means 1 (the API server's default).
        replicas = int(spec.get("replicas", 1) or 0)
        conditions = status.get("conditions") or []
        observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        updated = int(status.get("updatedReplicas") or 0)
        total = int(status.get("replicas") or 0)
        # As `kubectl rollout status`: not all replicas updated yet, or old ones still there.
        rolling = observed and (updated < replicas or total > updated)
        restarting = not observed or rolling
        available = any(
            c.get("type") == "Available" and c.get("status") == "True" for c in conditions
        )
        stuck = any(
            c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            for c in conditions
        )
        ready = int(status.get("readyReplicas") or 0)
        available_replicas = int(status.get("availableReplicas", ready) or 0)
        revision = int((meta.get("annotations") or {}).get(REVISION, "1"))
        return TierState(
            tier=tier,
            region=region,
            healthy=available
            and ready >= replicas
            and available_replicas >= replicas
            and not restarting
            and not stuck,
            generation=max(0, revision - 1 - int(rolling)),
            restarting=restarting,
            observed_at=now_utc(),
        )

    async def _annotate_key(self, ns: str, name: str, d: dict[str, Any], key: str) -> None:
        for _ in range(self.conflict_retries):
            if key in self._keys(d):
                return
            body = {
                "metadata": {
                    "resourceVersion": self._rv(d),
                    "annotations": {IDEMPOTENCY_ANNOTATION: self._with_key(d, key)},
                }
            }
            try:
                await self._patch(ns, name, body, key)
            except Conflict:
                d = await self._get(ns, name)
            else:
                return
        raise PortError(f"{ns}/{name}: too many conflicts recording the key", retriable=True)

    # port -----------------------------------------------------------------

    @bounded
    async def get_pool(self, pool: str, region: str) -> WorkerPoolState:
        return self._pool_state(pool, region, await self._get(*self._where(pool, region)))

    @bounded
    async def get_tier(self, tier: str, region: str) -> TierState:
        return self._tier_state(tier, region, await self._get(*self._where(tier, region)))

    @bounded
    async def drain_pool(self, pool: str, region: str, *, idempotency_key: str) -> ActionResult:
        return await self._scale(pool, region, 0, idempotency_key)

    @bounded
    async def scale_pool(
        self, pool: str, region: str, replicas: int, *, idempotency_key: str
    ) -> ActionResult:
        """Scale to an exact size (the inverse of a drain: the size recorded before it)."""
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise PortError(f"replicas must be a non-negative integer, not {replicas!r}")
        return await self._scale(pool, region, replicas, idempotency_key)

    async def _scale(
        self, pool: str, region: str, replicas: int, idempotency_key: str
    ) -> ActionResult:
        ns, name = self._where(pool, region)
        d = await self._get(ns, name)
        before = self._pool_state(pool, region, d).model_dump(mode="json")
        if idempotency_key in self._keys(d):
            return ActionResult(
                idempotency_key=idempotency_key, changed=False, before=before, after=before
            )
        changed = False
        # Scale first, then record the key: scaling to a fixed size is itself
        # idempotent, so a crash in between is repaired by repeating the call.
        for _ in range(self.conflict_retries):
            if int((d.get("spec") or {}).get("replicas") or 0) == replicas:
                break
            body = {"metadata": {"resourceVersion": self._rv(d)}, "spec": {"replicas": replicas}}
            try:
                await self._patch_scale(ns, name, body, idempotency_key)
                changed = True
                break
            except Conflict:
                d = await self._get(ns, name)
        else:
            raise PortError(
                f"{ns}/{name}: too many conflicts scaling to {replicas}", retriable=True
            )
        d = await self._get(ns, name)
        await self._annotate_key(ns, name, d, idempotency_key)
        after = await self._get(ns, name)
        return ActionResult(
            idempotency_key=idempotency_key,
            changed=changed,
            before=before,
            after=self._pool_state(pool, region, after).model_dump(mode="json"),
            output={"namespace": ns, "deployment": name, "scaled_to": replicas},
        )

    # dry run ----------------------------------------------------------------

    @bounded
    async def preview_scale(self, pool: str, region: str, replicas: int) -> ChangePreview:
        """Server-side dry run (dryRun=All) of the scale a drain (0) or a scale would
        write: the API server validates and answers, and persists nothing."""
        ns, name = self._where(pool, region)
        d = await self._get(ns, name)
        current = int((d.get("spec") or {}).get("replicas") or 0)
        action: Action = (
            DrainWorkerPool(pool=pool, region=region)
            if replicas == 0
            else ScaleWorkerPool(pool=pool, region=region, replicas=replicas)
        )
        before = {"spec.replicas": current, "resourceVersion": self._rv(d)}
        if current == replicas:
            return ChangePreview(
                action=action,
                method="server_dry_run",
                target=f"{ns}/{name}",
                would_change=False,
                before=before,
                after=before,
                detail=f"already at {replicas} replicas: no write would be sent",
            )
        body = {"metadata": {"resourceVersion": self._rv(d)}, "spec": {"replicas": replicas}}
        try:
            answer = await self._patch_scale(ns, name, body, "", dry_run=True)
        except Conflict as e:
            raise PortError(
                f"{ns}/{name} changed during the dry run; repeat it", retriable=True
            ) from e
        would = int((answer.get("spec") or {}).get("replicas") or 0)
        return ChangePreview(
            action=action,
            method="server_dry_run",
            target=f"{ns}/{name}/scale",
            would_change=would != current,
            changes=(FieldChange(path="spec.replicas", before=current, after=would),),
            before=before,
            after={"spec.replicas": would},
            detail=f"the API server would scale {ns}/{name} from {current} to {would} replicas",
        )

    @bounded
    async def preview_restart(self, tier: str, region: str) -> ChangePreview:
        """Server-side dry run (dryRun=All) of the rollout restart's template patch."""
        ns, name = self._where(tier, region)
        d = await self._get(ns, name)
        if (d.get("spec") or {}).get("paused"):
            raise PortError(
                f"deployment {ns}/{name} is paused (spec.paused=true): a rollout restart "
                "would roll nothing"
            )
        restarted_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {
            "metadata": {"resourceVersion": self._rv(d)},
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}},
        }
        try:
            answer = await self._patch(ns, name, body, "", dry_run=True)
        except Conflict as e:
            raise PortError(
                f"{ns}/{name} changed during the dry run; repeat it", retriable=True
            ) from e

        def template_ann(x: dict[str, Any]) -> Any:
            spec = x.get("spec") or {}
            return (
                ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
            ).get(RESTARTED_AT)

        gen_before = int((d.get("metadata") or {}).get("generation") or 0)
        gen_after = int((answer.get("metadata") or {}).get("generation") or 0)
        changes = (
            FieldChange(
                path=f"spec.template.metadata.annotations.{RESTARTED_AT}",
                before=template_ann(d),
                after=template_ann(answer),
            ),
            FieldChange(path="metadata.generation", before=gen_before, after=gen_after),
        )
        return ChangePreview(
            action=RestartDependencyTier(tier=tier, region=region),
            method="server_dry_run",
            target=f"{ns}/{name}",
            would_change=template_ann(answer) != template_ann(d),
            changes=changes,
            before={"metadata.generation": gen_before, "resourceVersion": self._rv(d)},
            after={"metadata.generation": gen_after},
            detail=f"the API server would roll {ns}/{name} (a new pod template: every pod "
            "is replaced); a restart has no undo",
        )

    @bounded
    async def restart_tier(self, tier: str, region: str, *, idempotency_key: str) -> ActionResult:
        ns, name = self._where(tier, region)
        d = await self._get(ns, name)
        before = self._tier_state(tier, region, d).model_dump(mode="json")
        restarted_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        changed = False
        for _ in range(self.conflict_retries):
            if idempotency_key in self._keys(d):
                break
            if (d.get("spec") or {}).get("paused"):
                # The template would change, but a paused Deployment rolls nothing: reporting
                # that as a restart would be a lie the verifier has to catch later.
                raise PortError(
                    f"deployment {ns}/{name} is paused (spec.paused=true): a rollout restart "
                    "would roll nothing; resume it first (kubectl rollout resume) or hand over"
                )
            # One atomic write: the restart and the key it was made under.
            body = {
                "metadata": {
                    "resourceVersion": self._rv(d),
                    "annotations": {IDEMPOTENCY_ANNOTATION: self._with_key(d, idempotency_key)},
                },
                "spec": {
                    "template": {
                        "metadata": {
                            "annotations": {
                                RESTARTED_AT: restarted_at,
                                RESTART_KEY: idempotency_key,
                            }
                        }
                    }
                },
            }
            try:
                d = await self._patch(ns, name, body, idempotency_key)
                changed = True
                break
            except Conflict:
                d = await self._get(ns, name)
        else:
            raise PortError(f"{ns}/{name}: too many conflicts restarting", retriable=True)
        after = await self._get(ns, name)
        return ActionResult(
            idempotency_key=idempotency_key,
            changed=changed,
            before=before,
            after=self._tier_state(tier, region, after).model_dump(mode="json"),
            output={"namespace": ns, "deployment": name, "restartedAt": restarted_at}
            if changed
            else {"namespace": ns, "deployment": name},
        )


class SimulatorOrchestrator(DeploymentOrchestrator):
    """The simulator's Kubernetes-shaped API over plain httpx."""

    def __init__(
        self, base_url: str, token: str = "sim-admin-token", *, timeout: float = 5.0, **kw: Any
    ) -> None:
        super().__init__(timeout=timeout, **kw)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self, ns: str, name: str) -> str:
        return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"

    async def _get(self, ns: str, name: str) -> dict[str, Any]:
        response = await self._client.get(self._url(ns, name))
        if response.status_code == 404:
            raise PortError(f"deployment {ns}/{name} not found")
        return dict(raise_for_status(response))

    async def _send(
        self, url: str, body: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        if key:
            headers["Idempotency-Key"] = key
        response = await self._client.patch(
            url,
            json=body,
            headers=headers,
            params={"dryRun": "All"} if dry_run else None,
        )
        if response.status_code == 409:
            raise Conflict(response.text)
        return dict(raise_for_status(response))

    async def _patch(
        self, ns: str, name: str, body: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        return await self._send(self._url(ns, name), body, key, dry_run=dry_run)

    async def _patch_scale(
        self, ns: str, name: str, body: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        return await self._send(self._url(ns, name) + "/scale", body, key, dry_run=dry_run)


_current_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conn_idempotency_key", default=None
)


class _KeyHeaderTransport(httpx2.AsyncBaseTransport):
    """Adds `Idempotency-Key` to lightkube's requests (ignored by real API servers;
    lets the simulator attribute side effects)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        key = _current_key.get()
        if key:
            request.headers["Idempotency-Key"] = key
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _denied(e: KubeApiError, verb: str, ns: str, name: str) -> PortError | None:
    """A clear, non-retriable PortError for 401/403 (retrying cannot grant a permission)."""
    code = e.status.code or 0
    if code == 403:
        return PortError(
            f"not authorized to {verb} deployment {ns}/{name} (Kubernetes RBAC: "
            f"{e.status.message}); {RBAC_HINT} in namespace {ns}"
        )
    if code == 401:
        return PortError(
            f"Kubernetes rejected the credentials while trying to {verb} deployment "
            f"{ns}/{name} (HTTP 401): check CONN_KUBERNETES_TOKEN / the ServiceAccount token"
        )
    return None


class KubernetesOrchestrator(DeploymentOrchestrator):
    """A real Kubernetes API server through lightkube's AsyncClient.

    `api_url` (+ `token`, `ca_file`), else `kubeconfig` (a file), else lightkube's own
    discovery (in-cluster service account, or $KUBECONFIG / ~/.kube/config)."""

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        *,
        ca_file: str | None = None,
        insecure: bool = False,
        kubeconfig: str | None = None,
        timeout: float = 5.0,
        **kw: Any,
    ) -> None:
        super().__init__(timeout=timeout, **kw)
        if api_url:
            config = KubeConfig.from_one(
                cluster=Cluster(server=api_url, certificate_auth=ca_file, insecure=insecure),
                user=User(token=token),
            ).get()
        elif kubeconfig:
            config = KubeConfig.from_file(kubeconfig).get()
        else:
            config = KubeConfig.from_env().get()
        if config is None:
            raise PortError("no Kubernetes configuration (set CONN_KUBERNETES_API_URL)")
        # lightkube's own TLS setup (CA, client certs), under a transport that adds
        # the Idempotency-Key header.
        verify = verify_cluster(config.cluster, config.user or User(), config.abs_file)
        transport = _KeyHeaderTransport(httpx2.AsyncHTTPTransport(verify=verify))
        self._transport = transport
        self._client = AsyncClient(
            config, timeout=httpx2.Timeout(timeout), transport=transport, field_manager="conn"
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def _get(self, ns: str, name: str) -> dict[str, Any]:
        try:
            obj = await self._client.get(Deployment, name, namespace=ns)
        except KubeApiError as e:
            if e.status.code == 404:
                raise PortError(f"deployment {ns}/{name} not found") from e
            raise _denied(e, "get", ns, name) or e from e
        return dict(obj.to_dict())

    async def _patch(
        self, ns: str, name: str, body: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        token = _current_key.set(key or None)
        try:
            obj = await self._client.patch(
                Deployment, name, body, namespace=ns, patch_type=PatchType.MERGE, dry_run=dry_run
            )
        except KubeApiError as e:
            if e.status.code == 409:
                raise Conflict(e.status.message) from e
            raise _denied(e, "patch", ns, name) or e from e
        finally:
            _current_key.reset(token)
        return dict(obj.to_dict())

    async def _patch_scale(
        self, ns: str, name: str, body: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        token = _current_key.set(key or None)
        try:
            obj = await self._client.patch(
                Deployment.Scale,
                name,
                body,
                namespace=ns,
                patch_type=PatchType.MERGE,
                dry_run=dry_run,
            )
        except KubeApiError as e:
            if e.status.code == 409:
                raise Conflict(e.status.message) from e
            raise _denied(e, "scale", ns, name) or e from e
        finally:
            _current_key.reset(token)
        return dict(obj.to_dict())
