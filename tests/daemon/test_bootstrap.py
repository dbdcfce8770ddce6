"""Grant planning of the dataset bootstrap (pure)."""

from __future__ import annotations

from agent.api.models import Grant, Role
from agent.bootstrap import plan_grants
from agent.config import GrantConfig


def g(principal: str, role: str) -> GrantConfig:
    return GrantConfig(principal=principal, role=Role.parse(role))


def test_missing_and_changed_grants_are_added() -> None:
    """Declared grants absent or at another role are added; matching ones are left alone."""
    current = [Grant("alice", Role.ADMIN), Grant("bob", Role.READ)]
    plan = plan_grants((g("bob", "write"), g("carol", "read"), g("alice", "admin")), current, exclusive=False)
    assert [(x.principal, x.role) for x in plan.add] == [("bob", Role.WRITE), ("carol", Role.READ)]
    assert plan.remove == ()


def test_undeclared_grants_stay_unless_exclusive() -> None:
    """Without grants_exclusive undeclared grants stay; with it they go, except owners."""
    current = [Grant("alice", Role.ADMIN), Grant("bob", Role.READ), Grant("dave", Role.WRITE)]
    assert plan_grants((g("bob", "read"),), current, exclusive=False).remove == ()
    plan = plan_grants((g("bob", "read"),), current, exclusive=True)
    assert [x.principal_id for x in plan.remove] == ["dave"]
    assert plan.add == ()
