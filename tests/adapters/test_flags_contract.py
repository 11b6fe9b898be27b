"""One FeatureFlags contract, run against every adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from adapter_support import SIM_TOKEN, Sim

from conn_adapters.flags import SimulatorFeatureFlags, UnleashFeatureFlags
from conn_core.ports import FeatureFlags, PortError

FLAG, RULE = "checkout-pricing", "canary-10pct"


class FlagsContract:
    region = "eu-west"

    @pytest.fixture
    def side_effects(self) -> Callable[[], dict[str, int]] | None:
        return None

    async def test_implements_the_port(self, flags: Any) -> None:
        assert isinstance(flags, FeatureFlags)

    async def test_reads_enabled_rule(self, flags: FeatureFlags) -> None:
        state = await flags.get_rule(FLAG, RULE, self.region)
        assert (state.flag, state.rule, state.region, state.enabled) == (
            FLAG,
            RULE,
            self.region,
            True,
        )

    async def test_disable_then_read_back(self, flags: FeatureFlags) -> None:
        result = await flags.disable_rule(FLAG, RULE, self.region, idempotency_key="k-dis")
        assert result.changed and result.before["enabled"] and not result.after["enabled"]
        assert (await flags.get_rule(FLAG, RULE, self.region)).enabled is False

    async def test_same_key_twice_changes_nothing(
        self, flags: FeatureFlags, side_effects: Callable[[], dict[str, int]] | None
    ) -> None:
        first = await flags.disable_rule(FLAG, RULE, self.region, idempotency_key="k-rep")
        before = await flags.get_rule(FLAG, RULE, self.region)
        second = await flags.disable_rule(FLAG, RULE, self.region, idempotency_key="k-rep")
        after = await flags.get_rule(FLAG, RULE, self.region)
        assert first.changed and not second.changed
        assert before.enabled == after.enabled is False
        if side_effects is not None:
            assert side_effects().get("k-rep") == 1

    async def test_unknown_rule_is_a_port_error(self, flags: FeatureFlags) -> None:
        with pytest.raises(PortError) as err:
            await flags.get_rule(FLAG, "no-such-rule", self.region)
        assert not err.value.retriable

    # -- recorded undo and dry run (issue 19) ---------------------------------------

    async def test_enable_restores_a_disabled_rule(self, flags: FeatureFlags) -> None:
        await flags.disable_rule(FLAG, RULE, self.region, idempotency_key="k-off")
        result = await flags.enable_rule(FLAG, RULE, self.region, idempotency_key="k-on")
        assert result.changed and not result.before["enabled"] and result.after["enabled"]
        assert (await flags.get_rule(FLAG, RULE, self.region)).enabled is True
        again = await flags.enable_rule(FLAG, RULE, self.region, idempotency_key="k-on")
        assert not again.changed

    async def test_dry_run_changes_nothing(
        self, flags: UnleashFeatureFlags, side_effects: Callable[[], dict[str, int]] | None
    ) -> None:
        async def feature() -> Any:
            r = await flags._client.get(flags._path(FLAG))
            r.raise_for_status()
            return r.json()

        before = await feature()
        counted = side_effects() if side_effects is not None else None
        preview = await flags.preview_rule(FLAG, RULE, self.region, enabled=False)
        assert preview.method == "computed_diff" and preview.would_change
        assert [(c.path, c.before, c.after) for c in preview.changes] == [
            ("/disabled", False, True)
        ]
        noop = await flags.preview_rule(FLAG, RULE, self.region, enabled=True)
        assert not noop.would_change and noop.changes == ()
        # The target's own record of the flag, every field, is untouched.
        assert await feature() == before
        assert (await flags.get_rule(FLAG, RULE, self.region)).enabled is True
        if side_effects is not None:
            assert side_effects() == counted


class TestSimulatorFlags(FlagsContract):
    @pytest.fixture
    async def flags(self, sim: Sim) -> AsyncIterator[SimulatorFeatureFlags]:
        adapter = SimulatorFeatureFlags(sim.url, SIM_TOKEN, timeout=5)
        yield adapter
        await adapter.aclose()

    @pytest.fixture
    def side_effects(self, sim: Sim) -> Callable[[], dict[str, int]]:
        return sim.side_effects

    async def test_wrong_token_is_not_retriable(self, sim: Sim) -> None:
        adapter = SimulatorFeatureFlags(sim.url, "wrong", timeout=5)
        with pytest.raises(PortError) as err:
            await adapter.get_rule(FLAG, RULE, "eu-west")
        assert not err.value.retriable
        await adapter.aclose()


@pytest.mark.integration
class TestUnleashFlags(FlagsContract):
    """Real unleash-server (OSS: environments `development`/`production`)."""

    @pytest.fixture
    async def flags(self, unleash: tuple[str, str]) -> AsyncIterator[UnleashFeatureFlags]:
        url, token = unleash
        env = "development"
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": token}, timeout=20
        ) as c:
            base = "/api/admin/projects/default/features"
            (await c.post(base, json={"name": FLAG, "type": "release"})).raise_for_status()
            strategy = {
                "name": "flexibleRollout",
                "title": RULE,
                "disabled": False,
                "parameters": {"rollout": "10", "stickiness": "default", "groupId": FLAG},
                "constraints": [],
            }
            r = await c.post(f"{base}/{FLAG}/environments/{env}/strategies", json=strategy)
            r.raise_for_status()
        adapter = UnleashFeatureFlags(url, token, environments={self.region: env}, timeout=10)
        yield adapter
        await adapter.aclose()
