"""FeatureFlags over the Unleash admin API (v5+; tested against unleash-server 7).

A Conn "rule" is an Unleash strategy on the flag, found by its `title` (or by its
`name` when it has no title); a region maps to an Unleash environment. Disabling
a rule sets the strategy's `disabled: true` (JSON Patch on the strategy), which
keeps it visible and reversible in the Unleash UI; enabling it again (a recorded undo)
sets `disabled: false`. A preview (dry run) only reads: Unleash has no dry-run mode, so the
change is a computed diff.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from conn_adapters._common import bounded, now_utc, raise_for_status
from conn_core.ports import ActionResult, FlagRuleState, PortError
from conn_schemas.undo import ChangePreview, FieldChange
from conn_schemas.values import Action, DisableFlagRule, EnableFlagRule, fit_json


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
        return await self._set_rule(flag, rule, region, False, idempotency_key)

    @bounded
    async def enable_rule(
        self, flag: str, rule: str, region: str, *, idempotency_key: str
    ) -> ActionResult:
        """The inverse of `disable_rule` (a recorded undo): `disabled: false`."""
        return await self._set_rule(flag, rule, region, True, idempotency_key)

    async def _set_rule(
        self, flag: str, rule: str, region: str, enabled: bool, idempotency_key: str
    ) -> ActionResult:
        if idempotency_key in self._done:
            return self._done[idempotency_key].model_copy(update={"changed": False})
        s = await self._strategy(flag, rule, region)
        before = self._state(flag, rule, region, s).model_dump(mode="json")
        output: dict[str, Any] = {"strategy_id": s["id"], "environment": self.environment(region)}
        changed = False
        if bool(s.get("disabled", False)) == enabled:
            url = f"{self._path(flag)}/environments/{self.environment(region)}/strategies/{s['id']}"
            response = await self._client.patch(
                url,
                json=[{"op": "replace", "path": "/disabled", "value": not enabled}],
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
            output=fit_json(output),  # the target's answer can be any size
        )
        self._done[idempotency_key] = result
        return result

    @bounded
    async def preview_rule(
        self, flag: str, rule: str, region: str, *, enabled: bool
    ) -> ChangePreview:
        """Unleash has no dry-run mode: a computed diff from a read (GET only) of the
        strategy, the exact JSON Patch that would be sent, and nothing written."""
        s = await self._strategy(flag, rule, region)
        env = self.environment(region)
        disabled = bool(s.get("disabled", False))
        would_change = disabled == enabled
        before = {"strategy_id": s.get("id"), "environment": env, "disabled": disabled}
        after = {**before, "disabled": not enabled}
        action: Action = (
            EnableFlagRule(flag=flag, rule=rule, region=region)
            if enabled
            else DisableFlagRule(flag=flag, rule=rule, region=region)
        )
        return ChangePreview(
            action=action,
            method="computed_diff",
            target=f"{self.project}/{flag}/{env}/strategies/{s.get('id')}",
            would_change=would_change,
            changes=(FieldChange(path="/disabled", before=disabled, after=not enabled),)
            if would_change
            else (),
            before=before,
            after=after if would_change else before,
            detail=(
                f"would PATCH [{{op: replace, path: /disabled, value: {str(not enabled).lower()}}}]"
                if would_change
                else f"rule {rule} is already {'enabled' if enabled else 'disabled'}: no write"
            ),
        )


class SimulatorFeatureFlags(UnleashFeatureFlags):
    """The simulator's flag API is Unleash-shaped: same client, simulator defaults."""

    def __init__(
        self, base_url: str, token: str = "sim-admin-token", *, timeout: float = 5.0
    ) -> None:
        super().__init__(base_url, token, project="default", timeout=timeout)
