"""The simulated checkout platform: a pure, deterministic model (no I/O).

`Platform.from_scenario(scenario, seed)` builds the state; `step(dt)` advances
simulated time in fixed 1-second internal steps (so the outcome does not depend
on how the caller slices time); the action methods (`set_rule`, `scale_pool`,
`restart_tier`) return whether they changed anything, which the HTTP shell uses
to count side effects.

Health follows from causes. Every scripted fault is a cause with an error and a
queue contribution in one region; a cause is active while its condition holds:

- `flag_rule`: while the flag rule is enabled in the region;
- `pool`:      while the worker pool has ready replicas in the region;
- `tier`:      until the tier completes a rollout restart (stale state);
- `external`:  always (needs work outside Conn's authority, e.g. orders-db).

Per region the error ratio and queue depth move toward baseline + the sum of the
active causes with a first-order lag (faster when worsening than recovering), so
removing every cause makes the region decay to its healthy baseline over
simulated minutes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["flag_rule", "pool", "tier", "external"]

REGIONS: tuple[str, ...] = ("us-east", "eu-west")
#: A region counts as recovered when both hold (used by tests and the demo).
HEALTHY_ERROR_RATIO = 0.02
HEALTHY_QUEUE_DEPTH = 50.0


@dataclass(frozen=True)
class Fault:
    id: str
    region: str
    kind: FaultKind
    error: float
    queue: float
    flag: str = ""
    rule: str = ""
    pool: str = ""
    tier: str = ""
    description: str = ""


@dataclass(frozen=True)
class FlagRevert:
    """A config-sync job that re-enables a rule `after` seconds once it is disabled."""

    flag: str
    rule: str
    region: str
    after: float


@dataclass(frozen=True)
class Baseline:
    error_ratio: float = 0.004
    queue_depth: float = 8.0
    request_rate: float = 120.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    regions: tuple[str, ...]
    flags: dict[str, dict[str, dict[str, bool]]]  # flag -> rule -> region -> enabled
    pools: dict[str, dict[str, int]]  # pool -> region -> replicas
    tiers: dict[str, dict[str, int]]  # tier -> region -> replicas
    faults: tuple[Fault, ...]
    reverts: tuple[FlagRevert, ...] = ()
    baseline: dict[str, Baseline] = field(default_factory=dict)
    freeze_metrics_after: float | None = None
    tau_worsen: float = 20.0
    tau_recover: float = 60.0
    drain_seconds_per_replica: float = 5.0
    restart_seconds: float = 30.0
    noise: float = 0.02

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Scenario:
        regions = tuple(raw.get("regions", REGIONS))
        baseline = {
            r: Baseline(**(raw.get("baseline", {}) | raw.get("region_baseline", {}).get(r, {})))
            for r in regions
        }
        return cls(
            name=str(raw["name"]),
            description=str(raw.get("description", "")).strip(),
            regions=regions,
            flags={
                f: {rule: {r: bool(v) for r, v in per.items()} for rule, per in rules.items()}
                for f, rules in raw.get("flags", {}).items()
            },
            pools={p: {r: int(v) for r, v in per.items()} for p, per in raw["pools"].items()},
            tiers={t: {r: int(v) for r, v in per.items()} for t, per in raw["tiers"].items()},
            faults=tuple(Fault(**f) for f in raw.get("faults", [])),
            reverts=tuple(FlagRevert(**f) for f in raw.get("reverts", [])),
            baseline=baseline,
            freeze_metrics_after=raw.get("freeze_metrics_after"),
            **{
                k: float(raw[k])
                for k in (
                    "tau_worsen",
                    "tau_recover",
                    "drain_seconds_per_replica",
                    "restart_seconds",
                    "noise",
                )
                if k in raw
            },
        )


@dataclass
class Pool:
    name: str
    region: str
    desired: int
    ready: int
    drain_progress: float = 0.0


@dataclass
class Tier:
    name: str
    region: str
    replicas: int
    generation: int = 0
    revision: int = 1
    restart_remaining: float = 0.0

    @property
    def restarting(self) -> bool:
        return self.restart_remaining > 0


@dataclass
class RegionMetrics:
    error_ratio: float
    queue_depth: float
    request_rate: float
    requests_total: float = 0.0
    errors_total: float = 0.0
    computed_at: float = 0.0  # simulated seconds of the last recompute


@dataclass
class Platform:
    scenario: Scenario
    seed: int
    t: float = 0.0
    rules: dict[tuple[str, str, str], bool] = field(default_factory=dict)
    pools: dict[tuple[str, str], Pool] = field(default_factory=dict)
    tiers: dict[tuple[str, str], Tier] = field(default_factory=dict)
    disabled_at: dict[tuple[str, str, str], float] = field(default_factory=dict)
    # "true" state (lagged values without noise) and the published metrics
    level: dict[str, tuple[float, float]] = field(default_factory=dict)
    metrics: dict[str, RegionMetrics] = field(default_factory=dict)
    _carry: float = 0.0
    _rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_scenario(cls, scenario: Scenario, seed: int) -> Platform:
        p = cls(scenario=scenario, seed=seed, _rng=random.Random(seed))
        for flag, rules in scenario.flags.items():
            for rule, per in rules.items():
                for region, enabled in per.items():
                    p.rules[(flag, rule, region)] = enabled
        for pool, replicas in scenario.pools.items():
            for region, n in replicas.items():
                p.pools[(pool, region)] = Pool(pool, region, n, n)
        for tier, tier_replicas in scenario.tiers.items():
            for region, n in tier_replicas.items():
                p.tiers[(tier, region)] = Tier(tier, region, n)
        for region in scenario.regions:
            # Start at the fully developed outage: the incident is already under way.
            err, queue = p._targets(region)
            p.level[region] = (err, queue)
            p.metrics[region] = RegionMetrics(err, queue, scenario.baseline[region].request_rate)
        return p

    # --- causes --------------------------------------------------------------

    def fault_active(self, f: Fault) -> bool:
        if f.kind == "flag_rule":
            return self.rules.get((f.flag, f.rule, f.region), False)
        if f.kind == "pool":
            pool = self.pools.get((f.pool, f.region))
            return pool is not None and pool.ready > 0
        if f.kind == "tier":
            tier = self.tiers.get((f.tier, f.region))
            return tier is not None and tier.generation == 0
        return True

    def active_faults(self, region: str | None = None) -> list[Fault]:
        return [
            f
            for f in self.scenario.faults
            if (region is None or f.region == region) and self.fault_active(f)
        ]

    def _targets(self, region: str) -> tuple[float, float]:
        base = self.scenario.baseline[region]
        active = self.active_faults(region)
        err = min(1.0, base.error_ratio + sum(f.error for f in active))
        queue = base.queue_depth + sum(f.queue for f in active)
        return err, queue

    def tier_healthy(self, tier: str, region: str) -> bool:
        t = self.tiers[(tier, region)]
        if t.restarting:
            return False
        return not any(f.tier == tier for f in self.active_faults(region))

    def tier_ready(self, tier: str, region: str) -> int:
        t = self.tiers[(tier, region)]
        if t.restarting:
            return max(0, t.replicas - 1)
        return t.replicas if self.tier_healthy(tier, region) else max(0, t.replicas // 3)

    # --- actions -------------------------------------------------------------

    def set_rule(self, flag: str, rule: str, region: str, enabled: bool) -> bool:
        key = (flag, rule, region)
        if key not in self.rules:
            raise KeyError(f"no rule {rule!r} on flag {flag!r} in {region!r}")
        if self.rules[key] == enabled:
            return False
        self.rules[key] = enabled
        if enabled:
            self.disabled_at.pop(key, None)
        else:
            self.disabled_at[key] = self.t
        return True

    def scale_pool(self, pool: str, region: str, replicas: int) -> bool:
        p = self.pools[(pool, region)]
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if p.desired == replicas:
            return False
        p.desired = replicas
        p.drain_progress = 0.0
        return True

    def restart_tier(self, tier: str, region: str) -> bool:
        """Start a rollout restart. Always a change (a new revision), like kubectl."""
        t = self.tiers[(tier, region)]
        t.revision += 1
        t.restart_remaining = self.scenario.restart_seconds
        return True

    # --- time ----------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance simulated time by `dt` seconds (in whole internal seconds)."""
        if dt < 0:
            raise ValueError("dt must be >= 0")
        self._carry += dt
        while self._carry >= 1.0 - 1e-9:
            self._carry -= 1.0
            self._tick()

    def _tick(self) -> None:
        sc = self.scenario
        self.t += 1.0
        for p in self.pools.values():
            if p.ready == p.desired:
                continue
            p.drain_progress += 1.0
            if p.drain_progress >= sc.drain_seconds_per_replica:
                p.drain_progress = 0.0
                p.ready += 1 if p.desired > p.ready else -1
        for tier in self.tiers.values():
            if tier.restarting:
                tier.restart_remaining = max(0.0, tier.restart_remaining - 1.0)
                if not tier.restarting:
                    tier.generation += 1
        for rv in sc.reverts:
            key = (rv.flag, rv.rule, rv.region)
            since = self.disabled_at.get(key)
            if since is not None and self.t - since >= rv.after:
                self.set_rule(rv.flag, rv.rule, rv.region, True)
        frozen = sc.freeze_metrics_after is not None and self.t > sc.freeze_metrics_after
        for region in sc.regions:
            target_err, target_q = self._targets(region)
            err, queue = self.level[region]
            err = _approach(err, target_err, sc.tau_worsen, sc.tau_recover)
            queue = _approach(queue, target_q, sc.tau_worsen, sc.tau_recover)
            self.level[region] = (err, queue)
            base = sc.baseline[region]
            jitter = [self._rng.gauss(0.0, sc.noise) for _ in range(3)]
            if frozen:
                continue  # the source stops recomputing; the platform keeps evolving
            m = self.metrics[region]
            m.request_rate = max(0.0, base.request_rate * (1.0 + jitter[0]))
            m.error_ratio = min(1.0, max(0.0, err * (1.0 + jitter[1])))
            m.queue_depth = max(0.0, queue * (1.0 + jitter[2]))
            m.requests_total += m.request_rate
            m.errors_total += m.request_rate * m.error_ratio
            m.computed_at = self.t

    # --- views ---------------------------------------------------------------

    def recovered(self, region: str) -> bool:
        m = self.metrics[region]
        return m.error_ratio < HEALTHY_ERROR_RATIO and m.queue_depth < HEALTHY_QUEUE_DEPTH

    def snapshot(self) -> dict[str, Any]:
        """Full state as JSON-able data (GET /sim/state)."""
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "t": self.t,
            "flags": [
                {"flag": f, "rule": r, "region": g, "enabled": on}
                for (f, r, g), on in sorted(self.rules.items())
            ],
            "pools": [
                {"pool": p.name, "region": p.region, "desired": p.desired, "ready": p.ready}
                for p in self.pools.values()
            ],
            "tiers": [
                {
                    "tier": t.name,
                    "region": t.region,
                    "replicas": t.replicas,
                    "ready": self.tier_ready(t.name, t.region),
                    "healthy": self.tier_healthy(t.name, t.region),
                    "generation": t.generation,
                    "revision": t.revision,
                    "restarting": t.restarting,
                }
                for t in self.tiers.values()
            ],
            "active_faults": [f.id for f in self.active_faults()],
            "metrics": {
                r: {
                    "error_ratio": m.error_ratio,
                    "queue_depth": m.queue_depth,
                    "request_rate": m.request_rate,
                    "requests_total": m.requests_total,
                    "errors_total": m.errors_total,
                    "computed_at": m.computed_at,
                    "recovered": self.recovered(r),
                }
                for r, m in self.metrics.items()
            },
        }


def _approach(value: float, target: float, tau_up: float, tau_down: float) -> float:
    tau = tau_up if target > value else tau_down
    return target + (value - target) * math.exp(-1.0 / tau)
