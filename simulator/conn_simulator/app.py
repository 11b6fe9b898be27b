"""HTTP shell around the pure model: Prometheus /metrics, an Unleash-shaped admin
API, a Kubernetes-shaped apps/v1 API and /sim/* test hooks.

Kept honest on purpose: unknown objects are 404, a stale `resourceVersion` is 409,
wrong tokens are 401. The simulator does NOT dedupe mutating calls by
`Idempotency-Key` (neither Unleash nor Kubernetes does); it only counts, per key,
the calls that changed the platform (`GET /sim/side-effects`), so contract tests
can prove that the adapters are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conn_simulator import scenarios
from conn_simulator.model import Platform

IDEMPOTENCY_ANNOTATION = "conn.dev/idempotency-key"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
PROJECT = "default"
ANONYMOUS_KEY = "-"


Key = Annotated[str | None, Header(alias="Idempotency-Key")]
Auth = Annotated[str | None, Header()]
DryRun = Annotated[str | None, Query(alias="dryRun", max_length=40)]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class Simulation:
    """Mutable holder of the platform plus the API-level metadata around it."""

    def __init__(self, scenario: str, seed: int, speed: float, token: str | None) -> None:
        self.token = token
        self.speed = speed
        self.reset(scenario, seed)

    def reset(self, scenario: str, seed: int, speed: float | None = None) -> None:
        self.platform = Platform.from_scenario(scenarios.load(scenario), seed)
        if speed is not None:
            self.speed = speed
        self.side_effects: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []
        self.record_keys: dict[str, int] = {}
        self.rv = 1000
        self.meta: dict[tuple[str, str], dict[str, Any]] = {}
        for name, region in [*self.platform.pools, *self.platform.tiers]:
            self.meta[(region, name)] = {
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{region}/{name}")),
                "resourceVersion": self._next_rv(),
                "generation": 1,
                "revision": 1,
                "annotations": {},
                "template_annotations": {},
                "created": _iso(datetime.now(UTC)),
            }
        self.mutation_delay = 0.0
        """Fault hook: seconds a mutating call waits AFTER applying, before answering
        (a change that lands but whose answer comes late: outcome unknown)."""
        self.published_wall: dict[str, float] = {}
        self._published_at: dict[str, float] = {}
        self.published_state: dict[str, Any] = {}
        self.publish()

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    # --- time ----------------------------------------------------------------

    def advance(self, sim_seconds: float) -> None:
        self.platform.step(sim_seconds)
        self.publish()

    def publish(self) -> None:
        """Record the wall clock of every region whose metrics were recomputed."""
        now = time.time()
        changed = False
        for region, m in self.platform.metrics.items():
            if self._published_at.get(region) != m.computed_at:
                self._published_at[region] = m.computed_at
                self.published_wall[region] = now
                changed = True
        if changed or not self.published_state:
            self.published_state = self.platform.snapshot()

    async def run(self, tick: float) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            self.advance((now - last) * self.speed)
            last = now

    # --- auth / keys ---------------------------------------------------------

    def check_token(self, authorization: str | None) -> None:
        if self.token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if given != self.token:
            raise ApiError(401, "Unauthorized", "missing or invalid API token")

    def count(self, key: str | None) -> None:
        self.side_effects[key or ANONYMOUS_KEY] += 1

    # --- kubernetes shape ----------------------------------------------------

    def _lookup(self, ns: str, name: str) -> tuple[str, dict[str, Any]]:
        meta = self.meta.get((ns, name))
        if meta is None:
            raise ApiError(404, "NotFound", f'deployments.apps "{name}" not found')
        kind = "pool" if (name, ns) in self.platform.pools else "tier"
        return kind, meta

    def deployment(self, ns: str, name: str) -> dict[str, Any]:
        kind, meta = self._lookup(ns, name)
        p = self.platform
        if kind == "pool":
            pool = p.pools[(name, ns)]
            spec_replicas, ready, updated = pool.desired, pool.ready, pool.ready
            revision = meta["revision"]
        else:
            tier = p.tiers[(name, ns)]
            spec_replicas, ready = tier.replicas, p.tier_ready(name, ns)
            updated = tier.replicas - 1 if tier.restarting else tier.replicas
            revision = tier.revision
        available = ready >= spec_replicas and (kind == "pool" or p.tier_healthy(name, ns))
        labels = {"app": name, "conn.dev/kind": kind}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "generation": meta["generation"],
                "creationTimestamp": meta["created"],
                "labels": labels,
                "annotations": {**meta["annotations"], REVISION: str(revision)},
            },
            "spec": {
                "replicas": spec_replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": labels, "annotations": meta["template_annotations"]},
                    "spec": {"containers": [{"name": name, "image": f"conn-sim/{name}:1"}]},
                },
            },
            "status": {
                "observedGeneration": meta["generation"],
                "replicas": max(ready, updated),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "updatedReplicas": updated,
                "unavailableReplicas": max(0, spec_replicas - ready),
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True" if available else "False",
                        "reason": "MinimumReplicasAvailable" if available else "Degraded",
                    }
                ],
            },
        }

    def scale(self, ns: str, name: str) -> dict[str, Any]:
        d = self.deployment(ns, name)
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {k: d["metadata"][k] for k in ("name", "namespace", "uid")}
            | {"resourceVersion": d["metadata"]["resourceVersion"]},
            "spec": {"replicas": d["spec"]["replicas"]},
            "status": {"replicas": d["status"]["replicas"], "selector": f"app={name}"},
        }

    def patch_deployment(self, ns: str, name: str, body: dict[str, Any], key: str | None) -> None:
        kind, meta = self._lookup(ns, name)
        metadata = body.get("metadata") or {}
        want_rv = metadata.get("resourceVersion")
        if want_rv is not None and str(want_rv) != meta["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on deployments.apps "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
            )
        spec = body.get("spec") or {}
        replicas = spec.get("replicas")
        template_ann = ((spec.get("template") or {}).get("metadata") or {}).get("annotations")
        if replicas is not None and kind == "tier":
            tier = self.platform.tiers[(name, ns)]
            if int(replicas) != tier.replicas:
                raise ApiError(422, "Invalid", "the simulator does not scale dependency tiers")
            replicas = None
        if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
            raise ApiError(422, "Invalid", "spec.replicas: must be a non-negative integer")
        changed_spec = False
        _merge(meta["annotations"], metadata.get("annotations"))
        effective_key = key or meta["annotations"].get(IDEMPOTENCY_ANNOTATION)
        if replicas is not None and self.platform.scale_pool(name, ns, replicas):
            changed_spec = True
            self.count(effective_key)
        if template_ann is not None:
            before = dict(meta["template_annotations"])
            _merge(meta["template_annotations"], template_ann)
            if meta["template_annotations"] != before:
                changed_spec = True
                if kind == "tier":
                    self.platform.restart_tier(name, ns)
                else:
                    meta["revision"] += 1
                self.count(effective_key)
        if changed_spec:
            meta["generation"] += 1
        meta["resourceVersion"] = self._next_rv()
        self.publish()

    def preview_patch(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """`dryRun=All`: validate the patch as `patch_deployment` would and answer with
        the Deployment it would store, changing nothing (no count, no new version)."""
        kind, meta = self._lookup(ns, name)
        metadata = body.get("metadata") or {}
        want_rv = metadata.get("resourceVersion")
        if want_rv is not None and str(want_rv) != meta["resourceVersion"]:
            raise ApiError(
                409, "Conflict", f'deployments.apps "{name}": the object has been modified'
            )
        spec = body.get("spec") or {}
        replicas = spec.get("replicas")
        if replicas is not None and (
            not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0
        ):
            raise ApiError(422, "Invalid", "spec.replicas: must be a non-negative integer")
        d = copy.deepcopy(self.deployment(ns, name))
        _merge(d["metadata"]["annotations"], metadata.get("annotations"))
        changed = False
        if replicas is not None and replicas != d["spec"]["replicas"]:
            if kind == "tier":
                raise ApiError(422, "Invalid", "the simulator does not scale dependency tiers")
            d["spec"]["replicas"] = replicas
            changed = True
        template_ann = ((spec.get("template") or {}).get("metadata") or {}).get("annotations")
        if template_ann is not None:
            ann = d["spec"]["template"]["metadata"]["annotations"]
            before = dict(ann)
            _merge(ann, template_ann)
            changed = changed or ann != before
        if changed:
            d["metadata"]["generation"] += 1
        return d

    # --- unleash shape -------------------------------------------------------

    def _strategy_id(self, flag: str, rule: str, region: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{flag}/{rule}/{region}"))

    def _find_strategy(self, project: str, flag: str, env: str, sid: str) -> tuple[str, str]:
        self._check_flag(project, flag, env)
        for f, rule, region in self.platform.rules:
            if f == flag and region == env and self._strategy_id(f, rule, region) == sid:
                return rule, region
        raise ApiError(404, "NotFoundError", f"Could not find strategy with id {sid}")

    def _check_flag(self, project: str, flag: str, env: str | None = None) -> None:
        if project != PROJECT or not any(f == flag for f, _, _ in self.platform.rules):
            raise ApiError(404, "NotFoundError", f"Could not find feature flag {flag}")
        if env is not None and env not in self.platform.scenario.regions:
            raise ApiError(404, "NotFoundError", f"Could not find environment {env}")

    def strategy(self, flag: str, rule: str, region: str) -> dict[str, Any]:
        canary = rule.startswith("canary")
        rules = sorted(r for f, r, g in self.platform.rules if f == flag and g == region)
        return {
            "id": self._strategy_id(flag, rule, region),
            "name": "flexibleRollout" if canary else "default",
            "title": rule,
            "disabled": not self.platform.rules[(flag, rule, region)],
            "featureName": flag,
            "environment": region,
            "sortOrder": rules.index(rule),
            "parameters": {"rollout": "10", "stickiness": "default", "groupId": flag}
            if canary
            else {},
            "constraints": [],
            "segments": [],
            "variants": [],
        }

    def feature(self, project: str, flag: str) -> dict[str, Any]:
        self._check_flag(project, flag)
        envs = []
        for i, region in enumerate(self.platform.scenario.regions):
            rules = sorted(r for f, r, g in self.platform.rules if f == flag and g == region)
            envs.append(
                {
                    "name": region,
                    "environment": region,
                    "type": "production",
                    "enabled": True,
                    "sortOrder": i,
                    "strategies": [self.strategy(flag, r, region) for r in rules],
                }
            )
        return {
            "name": flag,
            "project": project,
            "type": "release",
            "stale": False,
            "archived": False,
            "environments": envs,
        }

    def set_strategy_disabled(
        self, project: str, flag: str, env: str, sid: str, disabled: bool, key: str | None
    ) -> dict[str, Any]:
        rule, region = self._find_strategy(project, flag, env, sid)
        if self.platform.set_rule(flag, rule, region, not disabled):
            self.count(key)
            self.publish()
        return self.strategy(flag, rule, region)


def _merge(target: dict[str, Any], patch: dict[str, Any] | None) -> None:
    for k, v in (patch or {}).items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = str(v)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class _PlatformCollector(Collector):
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def collect(self) -> list[Metric]:
        state = self.sim.published_state
        g = GaugeMetricFamily
        err = g("checkout_error_ratio", "Errors / requests per region", labels=["region"])
        queue = g("checkout_queue_depth", "Checkout queue depth", labels=["region"])
        rate = g("checkout_request_rate", "Requests per second", labels=["region"])
        req = CounterMetricFamily("checkout_requests", "Requests served", labels=["region"])
        errs = CounterMetricFamily("checkout_errors", "Failed requests", labels=["region"])
        updated = g(
            "checkout_metrics_updated_timestamp_seconds",
            "Wall-clock time of the last recompute of this region's metrics",
            labels=["region"],
        )
        for region, m in state["metrics"].items():
            err.add_metric([region], m["error_ratio"])
            queue.add_metric([region], m["queue_depth"])
            rate.add_metric([region], m["request_rate"])
            req.add_metric([region], m["requests_total"])
            errs.add_metric([region], m["errors_total"])
            updated.add_metric([region], self.sim.published_wall[region])
        rules = g(
            "checkout_flag_rule_enabled", "Flag rule enabled", labels=["flag", "rule", "region"]
        )
        for f in state["flags"]:
            rules.add_metric([f["flag"], f["rule"], f["region"]], float(f["enabled"]))
        pools = g("checkout_worker_pool_replicas", "Ready replicas", labels=["pool", "region"])
        for p in state["pools"]:
            pools.add_metric([p["pool"], p["region"]], p["ready"])
        healthy = g("checkout_tier_healthy", "Tier healthy", labels=["tier", "region"])
        gen = g("checkout_tier_generation", "Completed restarts", labels=["tier", "region"])
        for t in state["tiers"]:
            healthy.add_metric([t["tier"], t["region"]], float(t["healthy"]))
            gen.add_metric([t["tier"], t["region"]], t["generation"])
        return [err, queue, rate, req, errs, updated, rules, pools, healthy, gen]


def create_app(
    scenario: str = "seed_outage",
    seed: int = 7,
    speed: float = 60.0,
    *,
    token: str | None = "sim-admin-token",
    tick: float = 0.2,
) -> FastAPI:
    sim = Simulation(scenario, seed, speed, token)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(sim.run(tick))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="Conn simulated checkout platform", lifespan=lifespan)
    app.state.sim = sim
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_PlatformCollector(sim))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if request.url.path.startswith("/apis/"):
            body: dict[str, Any] = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": exc.message,
                "reason": exc.reason,
                "code": exc.code,
            }
        else:
            body = {
                "name": exc.reason,
                "message": exc.message,
                "details": [{"message": exc.message}],
            }
        return JSONResponse(body, status_code=exc.code)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "scenario": sim.platform.scenario.name, "t": sim.platform.t}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    # --- /sim hooks ----------------------------------------------------------

    @app.get("/sim/state")
    async def state() -> dict[str, Any]:
        return sim.platform.snapshot() | {"speed": sim.speed, "metrics_wall": sim.published_wall}

    @app.get("/sim/side-effects")
    async def side_effects() -> dict[str, int]:
        return dict(sim.side_effects)

    @app.post("/sim/reset")
    async def reset(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        sim.reset(
            str(body.get("scenario", "seed_outage")), int(body.get("seed", 7)), body.get("speed")
        )
        return sim.platform.snapshot()

    @app.post("/sim/advance")
    async def advance(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        sim.advance(float(body["seconds"]))
        return sim.platform.snapshot()

    @app.post("/sim/faults")
    async def faults(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Fault hooks: {"mutation_delay_seconds": N} makes every flag/deployment write
        apply at once and answer N seconds later (0 = off). Cleared by /sim/reset."""
        delay = float(body.get("mutation_delay_seconds", 0.0))
        if not 0.0 <= delay <= 600.0:
            raise ApiError(400, "BadRequest", "mutation_delay_seconds must be 0..600")
        sim.mutation_delay = delay
        return {"mutation_delay_seconds": sim.mutation_delay}

    async def answer_late() -> None:
        if sim.mutation_delay > 0:
            await asyncio.sleep(sim.mutation_delay)

    @app.post("/sim/incident-record")
    async def record(body: Annotated[dict[str, Any], Body()], key: Key = None) -> dict[str, Any]:
        if not isinstance(body.get("text"), str):
            raise ApiError(400, "BadRequest", "body must be Slack-compatible JSON with 'text'")
        if key and key in sim.record_keys:
            return {"ok": True, "duplicate": True, "index": sim.record_keys[key]}
        sim.records.append({"key": key, "received_at": _iso(datetime.now(UTC)), **body})
        if key:
            sim.record_keys[key] = len(sim.records) - 1
        sim.count(key)
        return {"ok": True, "duplicate": False, "index": len(sim.records) - 1}

    @app.get("/sim/incident-record")
    async def records() -> list[dict[str, Any]]:
        return sim.records

    # --- Unleash-shaped admin API ----------------------------------------------

    base = "/api/admin/projects/{project}/features/{flag}"

    @app.get(base)
    async def get_feature(project: str, flag: str, authorization: Auth = None) -> dict[str, Any]:
        sim.check_token(authorization)
        return sim.feature(project, flag)

    @app.get(base + "/environments/{env}/strategies")
    async def list_strategies(
        project: str, flag: str, env: str, authorization: Auth = None
    ) -> list[dict[str, Any]]:
        sim.check_token(authorization)
        sim._check_flag(project, flag, env)
        environment = next(
            e for e in sim.feature(project, flag)["environments"] if e["name"] == env
        )
        strategies: list[dict[str, Any]] = environment["strategies"]
        return strategies

    @app.get(base + "/environments/{env}/strategies/{sid}")
    async def get_strategy(
        project: str, flag: str, env: str, sid: str, authorization: Auth = None
    ) -> dict[str, Any]:
        sim.check_token(authorization)
        rule, region = sim._find_strategy(project, flag, env, sid)
        return sim.strategy(flag, rule, region)

    @app.put(base + "/environments/{env}/strategies/{sid}")
    async def put_strategy(
        project: str,
        flag: str,
        env: str,
        sid: str,
        body: Annotated[dict[str, Any], Body()],
        authorization: Auth = None,
        key: Key = None,
    ) -> dict[str, Any]:
        sim.check_token(authorization)
        if "name" not in body:
            raise ApiError(400, "ValidationError", '"name" is required')
        disabled = bool(body.get("disabled", False))
        result = sim.set_strategy_disabled(project, flag, env, sid, disabled, key)
        await answer_late()
        return result

    @app.patch(base + "/environments/{env}/strategies/{sid}")
    async def patch_strategy(
        project: str,
        flag: str,
        env: str,
        sid: str,
        ops: Annotated[list[dict[str, Any]], Body()],
        authorization: Auth = None,
        key: Key = None,
    ) -> dict[str, Any]:
        sim.check_token(authorization)
        rule, region = sim._find_strategy(project, flag, env, sid)
        result = sim.strategy(flag, rule, region)
        for op in ops:
            if op.get("op") != "replace" or op.get("path") != "/disabled":
                raise ApiError(400, "ValidationError", "simulator supports replace /disabled only")
            result = sim.set_strategy_disabled(project, flag, env, sid, bool(op["value"]), key)
        await answer_late()
        return result

    # --- Kubernetes-shaped apps/v1 -----------------------------------------------

    deploy = "/apis/apps/v1/namespaces/{ns}/deployments"

    @app.get(deploy)
    async def list_deployments(ns: str, authorization: Auth = None) -> dict[str, Any]:
        sim.check_token(authorization)
        items = [sim.deployment(n, name) for (n, name) in sim.meta if n == ns]
        return {
            "apiVersion": "apps/v1",
            "kind": "DeploymentList",
            "metadata": {"resourceVersion": str(sim.rv)},
            "items": items,
        }

    @app.get(deploy + "/{name}")
    async def get_deployment(ns: str, name: str, authorization: Auth = None) -> dict[str, Any]:
        sim.check_token(authorization)
        return sim.deployment(ns, name)

    @app.patch(deploy + "/{name}")
    async def patch_deployment(
        ns: str,
        name: str,
        request: Request,
        authorization: Auth = None,
        key: Key = None,
        dry_run: DryRun = None,
    ) -> dict[str, Any]:
        sim.check_token(authorization)
        body = await _merge_patch_body(request)
        if _is_dry_run(dry_run):
            return sim.preview_patch(ns, name, body)
        sim.patch_deployment(ns, name, body, key)
        await answer_late()
        return sim.deployment(ns, name)

    @app.get(deploy + "/{name}/scale")
    async def get_scale(ns: str, name: str, authorization: Auth = None) -> dict[str, Any]:
        sim.check_token(authorization)
        return sim.scale(ns, name)

    @app.api_route(deploy + "/{name}/scale", methods=["PATCH", "PUT"])
    async def patch_scale(
        ns: str,
        name: str,
        request: Request,
        authorization: Auth = None,
        key: Key = None,
        dry_run: DryRun = None,
    ) -> dict[str, Any]:
        sim.check_token(authorization)
        body = await _merge_patch_body(request)
        patch: dict[str, Any] = {"metadata": {}}
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv is not None:
            patch["metadata"]["resourceVersion"] = rv
        if "replicas" in (body.get("spec") or {}):
            patch["spec"] = {"replicas": body["spec"]["replicas"]}
        if _is_dry_run(dry_run):
            d = sim.preview_patch(ns, name, patch)
            scale = sim.scale(ns, name)
            scale["spec"]["replicas"] = d["spec"]["replicas"]
            return scale
        sim.patch_deployment(ns, name, patch, key)
        await answer_late()
        return sim.scale(ns, name)

    return app


def _is_dry_run(value: str | None) -> bool:
    if value is None:
        return False
    if value != "All":
        raise ApiError(400, "BadRequest", f"dryRun must be 'All', not {value[:40]!r}")
    return True


async def _merge_patch_body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if "json-patch+json" in ctype:
        raise ApiError(415, "UnsupportedMediaType", "use a merge or strategic merge patch")
    body = await request.json()
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "patch body must be a JSON object")
    return body
