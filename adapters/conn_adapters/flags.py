"""FeatureFlags over the Unleash admin API (v5+; tested against unleash-server 7).

A Conn "rule" is an Unleash strategy on the flag, found by its `title` (or by its
`name` when it has no title); a region maps to an Unleash environment. Disabling
a rule sets the strategy's `disabled: true` (JSON Patch on the strategy), which
keeps it visible and reversible in the Unleash UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from conn_adapters._common import bounded, now_utc, raise_for_status
from conn_core.ports import ActionResult, FlagRuleState, PortError


class UnleashFeatureFlags:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        project: str = "default",
        environments: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.environments = dict(environments or {})
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": token, "Accept": "application/json"},
            timeout=timeout,
        )
        self._done: dict[str, ActionResult] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    def environment(self, region: str) -> str:
        return self.environments.get(region, region)

    def _path(self, flag: str) -> str:
        return f"/api/admin/projects/{self.project}/features/{flag}"

    async def _strategy(self, flag: str, rule: str, region: str) -> dict[str, Any]:
        env = self.environment(region)
        response = await self._client.get(self._path(flag))
        if response.status_code == 404:
            raise PortError(f"flag {flag!r} not found in project {self.project!r}")
        feature = raise_for_status(response)
        for environment in feature.get("environments", []):
            if environment.get("name") != env:
                continue
            for s in environment.get("strategies", []):
                if (s.get("title") or s.get("name")) == rule:
                    return dict(s)
            raise PortError(f"no strategy titled {rule!r} on {flag!r} in environment {env!r}")
        raise PortError(f"flag {flag!r} has no environment {env!r} (region {region!r})")

    def _state(self, flag: str, rule: str, region: str, s: dict[str, Any]) -> FlagRuleState:
        return FlagRuleState(
            flag=flag,
            rule=rule,
            region=region,
            enabled=not bool(s.get("disabled", False)),
            observed_at=now_utc(),
        )

    @bounded
    async def get_rule(self, flag: str, rule: str, region: str) -> FlagRuleState:
        return self._state(flag, rule, region, await self._strategy(flag, rule, region))

    @bounded
    async def disable_rule(
        self, flag: str, rule: str, region: str, *, idempotency_key: str
    ) -> ActionResult:
        if idempotency_key in self._done:
            return self._done[idempotency_key].model_copy(update={"changed": False})
        s = await self._strategy(flag, rule, region)
        before = self._state(flag, rule, region, s).model_dump(mode="json")
        output: dict[str, Any] = {"strategy_id": s["id"], "environment": self.environment(region)}
        changed = False
        if not s.get("disabled", False):
            url = f"{self._path(flag)}/environments/{self.environment(region)}/strategies/{s['id']}"
            response = await self._client.patch(
                url,
                json=[{"op": "replace", "path": "/disabled", "value": True}],
                headers={"Idempotency-Key": idempotency_key},
            )
            output["response"] = raise_for_status(response)
            changed = True
        after = (await self.get_rule(flag, rule, region)).model_dump(mode="json")
        result = ActionResult(
            idempotency_key=idempotency_key,
            changed=changed,
            before=before,
            after=after,
            output=output,
        )
        self._done[idempotency_key] = result
        return result


class SimulatorFeatureFlags(UnleashFeatureFlags):
    """The simulator's flag API is Unleash-shaped: same client, simulator defaults."""

    def __init__(
        self, base_url: str, token: str = "sim-admin-token", *, timeout: float = 5.0
    ) -> None:
        super().__init__(base_url, token, project="default", timeout=timeout)
