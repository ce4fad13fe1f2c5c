#!/usr/bin/env python3
"""Prints a realistic burst of projector writes as NDJSON for `oasync sink --input -`.

Runs go through queued -> running (steps advance) -> succeeded/failed; codex workers
report heartbeats; a few notifications are posted and one is deleted. The same run
event is sometimes re-sent (a projector retry): the sink answers "duplicate".

    scripts/demo-writes.py [RUNS]
"""
import json
import random
import sys

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
rng = random.Random(42)
out = sys.stdout


def emit(**write):
    out.write(json.dumps(write, separators=(",", ":")) + "\n")


for r in range(runs):
    run_id = f"run_{r:05d}"
    org = f"org:{rng.randint(1, 5)}"
    seq = 0
    for status in ["queued", "running", "running", "running", "succeeded" if rng.random() < 0.9 else "failed"]:
        seq += 1
        steps = seq - 1
        write = dict(topic="runtime.run_summaries", doc_key=f"run_summary:{run_id}", scope=org,
                     payload={"run_id": run_id, "org_id": org, "status": status, "steps_completed": steps,
                              "model": "codex-1", "tokens": {"input": 1200 * steps, "output": 300 * steps},
                              "updated_at": f"2026-11-25T20:{seq:02d}:00Z"},
                     source_stream=f"run:{run_id}", source_seq=seq)
        emit(**write)
        if rng.random() < 0.05:
            emit(**write)  # a retry after a timeout: a duplicate
    worker = f"worker_{r % 8}"
    emit(topic="runtime.codex_worker_summaries", doc_key=f"codex_worker_summary:{worker}", scope=org,
         payload={"worker_id": worker, "state": "busy" if r % 3 else "idle", "current_run": run_id,
                  "runs_completed": r // 8})
    emit(topic="runtime.codex_worker_events", doc_key=f"codex_worker_event:{worker}:{r}", scope=org,
         payload={"worker_id": worker, "kind": "log", "line": f"finished {run_id}"})
    if r % 25 == 0:
        emit(topic="runtime.notifications", doc_key=f"notification:{r}", scope=org,
             payload={"title": f"Run {run_id} finished", "level": "info"})
emit(topic="runtime.notifications", doc_key="notification:0", op="delete")
