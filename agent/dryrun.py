"""`domino-sync once --dry-run`: what would be copied, deleted and snapshotted, changing nothing.

Nothing is created: not the dataset, not the mount, not the state DB. The rules are run on a copy of their
saved state with the facts a real pass would produce, so the tags shown are the ones a real pass would render.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import NotFoundError
from agent.facts import FileDeleted, FileSynced, Tick
from agent.recovery import Durable, marker_first_line
from agent.rules.engine import RulesState, SnapshotRequest, initial_state, step

if TYPE_CHECKING:
    from agent.daemon import Agent


def _saved_rules_state(state_dir: Path) -> str | None:
    db = state_dir / "state.db"
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT json FROM rules_state WHERE id = 1").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def simulate_rules(
    agent: Agent, copies: list[tuple[str, int, str | None]], deletes: list[str], now: float
) -> list[dict[str, Any]]:
    """The snapshot requests the rules would make for these copies and deletes (merged as the queue would)."""
    saved = _saved_rules_state(agent.config.state_dir)
    rules_json = Durable.loads(saved).rules_json if saved else None  # stored with the handled markers beside it
    state = RulesState.from_json(rules_json, agent.rules, now) if rules_json else initial_state(agent.rules, now)
    requests: list[SnapshotRequest] = []
    facts: list[Any] = [FileSynced(path=p, size=size, at=now, first_line=line) for p, size, line in copies]
    facts += [FileDeleted(path=p, at=now) for p in deletes]
    facts.append(Tick(now))
    for fact in facts:
        state, made = step(agent.rules, state, fact)
        requests.extend(made)
    if not requests:
        return []
    merged = requests[0]
    for request in requests[1:]:
        merged = merged.merge(request)
    return [{"rules": list(merged.rules), "tags": list(merged.tags), "scopes": list(merged.scopes)}]


async def dry_run(agent: Agent) -> dict[str, Any]:
    """The plan as JSON-ready data."""
    from agent.api.client import DatasetsClient
    from agent.sync.engine import SyncEngine

    config = agent.config
    summary: dict[str, Any] = {"dry_run": True}
    async with agent._endpoint() as endpoint, DatasetsClient(endpoint.settings) as client:
        name = config.dataset.name or ""
        try:
            if config.dataset.id:
                dataset = await client.get_dataset(config.dataset.id)
            else:
                dataset = await client.find_dataset(name, config.dataset.project_id)
            name = dataset.name
            summary["dataset"] = {"id": dataset.id, "name": dataset.name}
        except NotFoundError:
            if not config.dataset.create:
                raise
            summary["dataset"] = {"id": None, "name": name, "would_create": True}
        mount = agent._mount_for(endpoint, name)
        summary["mount"] = str(mount)
        engine = SyncEngine(config.source, mount, config.state_dir, marker_names=agent._markers)
        try:
            plan = await engine.plan()
        finally:
            await engine.aclose()
    source = config.source.path
    copies = []
    for rel in plan.copy:
        path = source / rel
        try:
            size = path.stat().st_size
        except OSError:
            continue
        copies.append((rel, size, marker_first_line(path) if path.name in agent._markers else None))
    summary.update(
        copy=list(plan.copy),
        move=[list(pair) for pair in plan.move],
        delete=list(plan.delete),
        refused_delete=plan.refused_delete,
        unsettled=list(plan.unsettled),
        skipped=[{"path": p, "why": why} for p, why in plan.skipped],
        mount_problem=plan.mount_problem,
        snapshots=simulate_rules(agent, copies, [] if plan.refused_delete else list(plan.delete), agent.clock()),
    )
    return summary


__all__ = ["dry_run", "simulate_rules"]
