"""Task types for ``taskward demo``: a small operation tree with progress."""

from __future__ import annotations

import asyncio

from taskward.context import TaskContext
from taskward.registry import task_type


@task_type("demo", "reindex", abortable=True, retryable=True, progress_units="batches")
async def reindex(ctx: TaskContext, *, tables: int = 3, batches: int = 20, batch_s: float = 0.1) -> dict[str, int]:
    """Re-index ``tables`` tables, one child task each; the root's progress is the children's batches,
    rolled up. A table that fails fails the whole re-index (``wait_child`` raises ``ChildFailed``)."""
    children = [await ctx.spawn_child("reindex-table", table=i, batches=batches, batch_s=batch_s)
                for i in range(tables)]
    batches_done = sum([(await ctx.wait_child(child))["batches"] for child in children])
    return {"tables": tables, "batches": batches_done}


@task_type("demo", "reindex-table", abortable=True, progress_units="batches")
async def reindex_table(ctx: TaskContext, *, table: int, batches: int, batch_s: float) -> dict[str, int]:
    for i in range(batches):
        ctx.check_aborted()
        await asyncio.sleep(batch_s)
        ctx.report_progress(i + 1, batches, f"table {table}: batch {i + 1}/{batches}")
    return {"table": table, "batches": batches}
