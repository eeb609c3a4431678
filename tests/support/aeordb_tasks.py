"""AeorDB's built-in task types, as a user migrating from AeorDB would register them (loaded with
``--tasks tests.support.aeordb_tasks``), plus a second ``fail`` so that a bare type name can be
ambiguous."""

from __future__ import annotations

import asyncio

from taskward import TaskContext, task_type


@task_type("aeordb", "reindex", abortable=True)
async def reindex(ctx: TaskContext, *, path: str = "/", files: int = 20, batch_s: float = 0.05) -> None:
    for i in range(files):
        ctx.check_aborted()
        await asyncio.sleep(batch_s)
        ctx.report_progress(i + 1, files, f"indexed {i + 1}/{files} files")


@task_type("aeordb", "gc", abortable=True)
async def gc(ctx: TaskContext) -> None:
    ctx.report_progress(1, 1, "swept")


@task_type("aeordb", "fail")
async def fail(ctx: TaskContext) -> None:
    raise RuntimeError("aeordb says no")
