"""metrics.jsonl in the torch engine: version 2 (steps = optimizer updates done, as the HF Trainer's
global_step and src/train/metrics.ts); version-1 files (0-based update index) are read with
step + 1 and rewritten in version 2 when a run appends to them."""

import json
from pathlib import Path

from flm_grow_torch.checkpointing import METRICS_HEADER, MetricsLog


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def test_new_file_starts_with_the_format_line(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    log = MetricsLog(str(p), truncate=True)
    log.log_step({"step": 1, "loss": 5.0})
    log.close()
    assert _lines(p) == [METRICS_HEADER, {"step": 1, "loss": 5.0}]


def test_version_1_file_is_migrated_and_resumed_at_updates_done(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    old = [{"step": 0, "loss": 5.0}, {"step": 1, "loss": 4.9}, {"event": "growth", "step": 2, "stage": 1}]
    old += [{"step": 2, "loss": 4.8}, {"step": 3, "loss": 4.7}]
    p.write_text("".join(json.dumps(r) + "\n" for r in old))
    # resuming from checkpoint-000003 (3 updates done): the records of updates 1..3 stay
    log = MetricsLog(str(p), resume_at_step=3)
    log.log_growth(2, 1)  # already logged: no duplicate
    log.log_step({"step": 4, "loss": 4.6})
    log.close()
    recs = _lines(p)
    assert recs[0] == METRICS_HEADER
    assert [(r.get("event"), r["step"]) for r in recs[1:]] == [
        (None, 1),
        (None, 2),
        ("growth", 2),
        (None, 3),
        (None, 4),
    ]
