"""Reading a runbook/authority file (YAML text) into an `AuthorityBoundary`.

Pure: the caller reads the file. The content hash recorded in the log is the
SHA-256 of the exact bytes, so an SRE can tell which version was in force.
"""

from __future__ import annotations

import hashlib

import yaml
from pydantic import ValidationError

from conn_schemas.values import (
    ActionGrant,
    ActionType,
    AuthorityBoundary,
    VerificationCriteria,
)


class AuthorityFileError(ValueError):
    """The file is not a valid authority declaration; the message says where."""


MAX_AUTHORITY_BYTES = 256 * 1024
"""An authority file is a few KiB; anything near this is not one."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (`*name`): an authority file never needs them,
    and expanding them is how a small document becomes a huge one (billion laughs)."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not allowed in an authority file", event.start_mark
            )
        node: yaml.Node | None = super().compose_node(parent, index)  # type: ignore[arg-type]
        return node


def load_yaml(content: bytes) -> object:
    """Parse one YAML document without aliases, bounded in size."""
    if len(content) > MAX_AUTHORITY_BYTES:
        raise AuthorityFileError(f"larger than {MAX_AUTHORITY_BYTES} bytes")
    try:
        return yaml.load(content, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise AuthorityFileError(f"not valid YAML: {exc}") from exc


def parse_authority(content: bytes, *, holder: str | None = None) -> tuple[AuthorityBoundary, str]:
    """Parse YAML bytes; `holder` overrides who holds the conn (the declaring commander)."""
    digest = hashlib.sha256(content).hexdigest()
    data = load_yaml(content)
    if not isinstance(data, dict):
        raise AuthorityFileError("the authority file must be a YAML mapping")
    if holder is not None:
        data = {**data, "holder": {**(data.get("holder") or {}), "identity": holder}}
    try:
        return AuthorityBoundary.model_validate(data), digest
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AuthorityFileError(f"{where}: {first['msg']} ({exc.error_count()} errors)") from exc


# --- comparing two boundaries ------------------------------------------------------

ANY = "*"
"""Stands for "any target" of a grant that names none."""

_LOOSER_WHEN_HIGHER = ("max_error_rate", "max_queue_depth", "max_reading_age_seconds")
_LOOSER_WHEN_LOWER = ("settle_seconds", "window_seconds", "samples")


def _grant_pairs(boundary: AuthorityBoundary, grant: ActionGrant) -> set[tuple[str, str]]:
    """(target, region) pairs a grant allows; a grant without targets allows ANY target,
    one without regions every declared region (regions outside them are refused anyway)."""
    declared = set(boundary.regions)
    regions = (set(grant.regions) & declared) if grant.regions else declared
    targets = set(grant.targets) if grant.targets else {ANY}
    return {(t, r) for t in targets for r in regions}


def _allowed(boundary: AuthorityBoundary, action: ActionType) -> tuple[bool, set[tuple[str, str]]]:
    grants = [g for g in boundary.allowed if g.action == action]
    pairs: set[tuple[str, str]] = set()
    for g in grants:
        pairs |= _grant_pairs(boundary, g)
    return bool(grants), pairs


def _covered(pair: tuple[str, str], old: set[tuple[str, str]]) -> bool:
    target, region = pair
    return (target, region) in old or (ANY, region) in old


def _criteria_widenings(
    what: str, old: VerificationCriteria, new: VerificationCriteria
) -> list[str]:
    out: list[str] = []
    for name in _LOOSER_WHEN_HIGHER:
        before, after = getattr(old, name), getattr(new, name)
        if after > before:
            out.append(f"verification of {what}: {name} raised from {before} to {after}")
    for name in _LOOSER_WHEN_LOWER:
        before, after = getattr(old, name), getattr(new, name)
        if after < before:
            out.append(f"verification of {what}: {name} lowered from {before} to {after}")
    if old.scope == "all_regions" and new.scope != "all_regions":
        out.append(f"verification of {what}: scope narrowed from all_regions to {new.scope}")
    for signal, limit in sorted(old.extra_max.items()):
        if signal not in new.extra_max:
            out.append(f"verification of {what}: signal {signal} no longer checked")
        elif new.extra_max[signal] > limit:
            out.append(
                f"verification of {what}: {signal} limit raised from {limit} to "
                f"{new.extra_max[signal]}"
            )
    return out


def widenings(old: AuthorityBoundary, new: AuthorityBoundary) -> list[str]:
    """Every way `new` lets the holder do more than `old`, for humans; [] means `new`
    only narrows (or equals) `old`. Pure and conservative: anything it cannot prove
    narrower is reported (regions, actions, targets, reservations, blast-radius
    limits, verification criteria, takeover teams, roles that may direct)."""
    out: list[str] = []
    for region in new.regions:
        if region not in old.regions:
            out.append(f"region {region} added")
    for action in ActionType:
        had, old_pairs = _allowed(old, action)
        has, new_pairs = _allowed(new, action)
        if has and not had:
            out.append(f"action {action.value} allowed")
            continue
        extra = sorted(p for p in new_pairs if not _covered(p, old_pairs))
        for target, region in extra:
            what = "any target" if target == ANY else target
            out.append(f"{action.value} of {what} in {region} allowed")
    old_res = {(r.action, r.target): r.team for r in old.reservations}
    new_res = {(r.action, r.target): r.team for r in new.reservations}
    for (action, target), team in sorted(old_res.items()):
        if new_res.get((action, target)) != team:
            out.append(f"reservation of {action.value} of {target} to team {team} dropped")
    for (action, target), team in sorted(new_res.items()):
        if old_res.get((action, target)) == team:
            continue
        # A reservation also lets its team direct the target (if the action is granted).
        granted = any(_covered((target, r), _allowed(old, action)[1]) for r in new.regions)
        if not granted:
            out.append(f"{action.value} of {target} granted to team {team} by a reservation")
    limits = (
        "max_drained_pools_per_region",
        "max_restarts_per_tier_region",
        "max_consequential_steps",
    )
    for name in limits:
        before, after = getattr(old.blast_radius, name), getattr(new.blast_radius, name)
        if after > before:
            out.append(f"blast radius {name} raised from {before} to {after}")
    out += _criteria_widenings("the default", old.default_verification, new.default_verification)
    for action in ActionType:
        if action in old.verification or action in new.verification:
            out += _criteria_widenings(
                action.value, old.criteria_for(action), new.criteria_for(action)
            )
    for team in new.takeover_teams:
        if team not in old.takeover_teams:
            out.append(f"takeover team {team} added")
    for role in new.roles_may_direct:
        if role not in old.roles_may_direct:
            out.append(f"role {role.value} may now direct")
    out += _approval_widenings(old, new)
    return out


def _approval_widenings(old: AuthorityBoundary, new: AuthorityBoundary) -> list[str]:
    """The two-person rule may only get stricter without a second person's approval."""
    out: list[str] = []
    for rule in old.approvals:
        for target in rule.targets or (ANY,):
            what = f"{rule.action.value} of {'any target' if target == ANY else target}"
            covering = [
                r
                for r in new.approvals
                if r.action == rule.action and (not r.targets or target in r.targets)
            ]
            if target == ANY:
                covering = [r for r in covering if not r.targets]
            if not covering:
                out.append(f"approval of {what} no longer required")
                continue
            strict = max(covering, key=lambda r: r.count)
            if strict.count < rule.count:
                out.append(f"approvals of {what} lowered from {rule.count} to {strict.count}")
            if strict.self_approval and not rule.self_approval:
                out.append(f"the issuer may now approve {what}")
            if strict.expires_after > rule.expires_after:
                out.append(f"approval window of {what} lengthened")
            roles_wider = bool(rule.roles) and (
                not strict.roles or not set(strict.roles) <= set(rule.roles)
            )
            teams_wider = bool(rule.teams) and (
                not strict.teams or not set(strict.teams) <= set(rule.teams)
            )
            if roles_wider or teams_wider:
                out.append(f"more people may approve {what}")
    return out
