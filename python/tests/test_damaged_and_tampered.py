"""Issue 21 in the torch engine (python -m flm_grow_torch.train), as the TS trainer
(test/reliability/damaged-and-tampered.test.ts):

- `--resume` past a damaged newest checkpoint says so in one line: the checkpoint, why (the file;
  truncated, sha256 differs, no manifest) and the step resumed from. Before, it went back to the
  previous save silently (these tests failed: no such line).
- a manifest field that drives computation, hand-edited to something impossible, is refused
  naming the field and the file (exit 2 from the command line). Before, it trained (these tests
  failed: nothing raised, exit 0).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flm_grow_torch import train as trainer
from flm_grow_torch.checkpointing import MANIFEST_FILE, ManifestError, write_manifest_last
from flm_grow_torch.masks import write_masks
from flm_grow_torch.runlock import LOCK_FILE, LOCK_HELD_ENV

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "hf" / "llama-tiny-f32"
CORPUS = ROOT / "fixtures" / "corpus" / "fortunes.txt"
FLAGS = ["--data", str(CORPUS), "--batch-size", "1", "--seq-len", "8", "--eval-batches", "1", "--device", "cpu"]


def run_train(ck: Path, out: Path, steps: int, *more: str) -> dict:
    # in-process runs: the run-folder lock would be held by this pytest process until it exits;
    # saying the parent holds it (as flm-grow does for its child) keeps the runs independent
    os.environ[LOCK_HELD_ENV] = str(out / LOCK_FILE)
    try:
        return trainer.main([str(ck), "--out", str(out), "--steps", str(steps), *FLAGS, "--threads", "1", *more])
    finally:
        del os.environ[LOCK_HELD_ENV]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A run of the fixture with saves at steps 2 and 4."""
    out = tmp_path_factory.mktemp("run") / "run"
    run_train(FIXTURE, out, 4, "--save-every", "2", "--quiet")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-000002", "checkpoint-000004"]
    return out


def _truncate(ck: Path) -> None:
    with open(ck / "optimizer.safetensors", "r+b") as f:
        f.truncate(100)


def _flip(ck: Path) -> None:
    p = ck / "model.safetensors"
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x40
    p.write_bytes(bytes(b))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_truncate, r"optimizer\.safetensors is truncated \(100 of the \d+ bytes its header needs\)"),
        (_flip, r"model\.safetensors does not match its manifest \(sha256 differs; \d+ bytes\)"),
        (lambda ck: (ck / MANIFEST_FILE).unlink(), r"no flm-grow-manifest\.json \(an interrupted save\)"),
    ],
)
def test_resume_past_a_damaged_checkpoint_says_so(saved_run, tmp_path, capsys, damage, why):
    import re

    out = tmp_path / "run"
    shutil.copytree(saved_run, out)
    damage(out / "checkpoint-000004")
    r = run_train(FIXTURE, out, 6, "--save-every", "2", "--resume")
    assert r["startStep"] == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if "skipped damaged checkpoint" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"train: warning: --resume skipped damaged checkpoint {out / 'checkpoint-000004'} (")
    assert re.search(why, lines[0])
    assert lines[0].endswith(f"resuming from {out / 'checkpoint-000002'} at step 2")


@pytest.fixture(scope="module")
def grown_like(tmp_path_factory) -> Path:
    """The fixture with what grow writes beside it: masks below 1 and a manifest with a schedule
    and a layer map (layer 1 an inserted copy of layer 0). It trains as it is."""
    d = tmp_path_factory.mktemp("grown") / "g"
    shutil.copytree(FIXTURE, d)
    (d / "reference.safetensors").unlink()
    cfg = json.loads((d / "config.json").read_text())
    H, F, NH, L, V = (
        cfg[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size")
    )
    ones = torch.ones
    write_masks(
        str(d / "masks.safetensors"),
        {
            "hidden": torch.cat([ones(H - 8), torch.zeros(8)]),
            "vocab": ones(V),
            "layers": [
                {"heads": ones(NH), "ffn": ones(F), "residual": ones(1) * (0.0 if i == 1 else 1.0)} for i in range(L)
            ],
        },
    )
    write_manifest_last(
        str(d),
        {
            "format": "flm-grow/1",
            "kind": "grow",
            "mode": "masked",
            "created": "2026-12-06T00:00:00Z",
            "tool": {"name": "flm-grow", "version": "0.1.0"},
            "masks": {
                "file": "masks.safetensors",
                "schedule": [
                    {"group": "hidden", "startStep": 0, "length": 6, "shape": "linear"},
                    {"group": "layers", "startStep": 0, "length": 6, "shape": "cosine"},
                ],
                "carried": {
                    "sourceStageStep": 2,
                    "groups": [
                        {
                            "group": "hidden",
                            "how": "continued",
                            "entry": {"group": "hidden", "startStep": 0, "length": 6, "shape": "linear"},
                        }
                    ],
                },
            },
            "layerMap": [{"source": 0, "inserted": False}, {"source": 0, "inserted": True}]
            + [{"source": i, "inserted": False} for i in range(1, L - 1)],
        },
    )
    run_train(d, d.parent / "ok-run", 1, "--quiet")  # the untampered manifest trains
    return d


def _set(path: str, value):
    def f(m):
        keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
        o = m
        for k in keys[:-1]:
            o = o[k]
        if value is _POP:
            o.pop()
        else:
            o[keys[-1]] = value

    return f


_POP = object()
GROWN_EDITS = [
    ("masks.schedule[0].length", _set("masks.schedule.0.length", -5)),
    ("masks.schedule[1].group", _set("masks.schedule.1.group", "everything")),
    ("masks.schedule[0].shape", _set("masks.schedule.0.shape", "square")),
    ("masks.schedule[0].startStep", _set("masks.schedule.0.startStep", 1.5)),
    ("masks.schedule[1].group", _set("masks.schedule.1.group", "hidden")),
    ("masks.file", _set("masks.file", "../../etc/passwd")),
    ("masks.carried.sourceStageStep", _set("masks.carried.sourceStageStep", -1)),
    ("masks.carried.groups[0].entry.length", _set("masks.carried.groups.0.entry.length", -5)),
    ("masks.carried.groups[0].how", _set("masks.carried.groups.0.how", "sideways")),
    ("layerMap[0].source", _set("layerMap.0.source", -3)),
    ("layerMap[2].source", _set("layerMap.2.source", 2)),
    ("layerMap[1].inserted", _set("layerMap.1.inserted", "yes")),
    ("layerMap", _set("layerMap.x", _POP)),
]


def _edit(d: Path, f) -> None:
    p = d / MANIFEST_FILE
    m = json.loads(p.read_text())
    f(m)
    p.write_text(json.dumps(m))


@pytest.mark.parametrize(("field", "edit"), GROWN_EDITS, ids=[f"{i}-{f}" for i, (f, _) in enumerate(GROWN_EDITS)])
def test_tampered_grown_manifest_is_refused(grown_like, tmp_path, field, edit):
    g = tmp_path / "g"
    shutil.copytree(grown_like, g)
    _edit(g, edit)
    with pytest.raises(ManifestError) as e:
        run_train(g, tmp_path / "run", 1, "--quiet")
    assert f'field "{field}"' in str(e.value)
    assert str(e.value).startswith(f"{g / MANIFEST_FILE}: ")
    assert not (tmp_path / "run" / "checkpoint-000001").exists()


TRAIN_EDITS = [
    ("extra.step", _set("extra.step", -1)),
    ("extra.stageStart", _set("extra.stageStart", 9)),
    ("extra.tokens", _set("extra.tokens", 1.5)),
    ("extra.lrSchedule.totalSteps", _set("extra.lrSchedule.totalSteps", 0)),
    ("extra.lrSchedule.minLr", _set("extra.lrSchedule.minLr", 5)),
    ("extra.runStartStep", _set("extra.runStartStep", -4)),
]


@pytest.mark.parametrize(("field", "edit"), TRAIN_EDITS, ids=[f for f, _ in TRAIN_EDITS])
def test_tampered_training_manifest_is_refused_on_resume(saved_run, tmp_path, field, edit):
    out = tmp_path / "run"
    shutil.copytree(saved_run, out)
    _edit(out / "checkpoint-000004", edit)
    with pytest.raises(ManifestError) as e:
        run_train(FIXTURE, out, 6, "--resume", "--quiet")
    assert f'field "{field}"' in str(e.value)
    assert str(e.value).startswith(f"{out / 'checkpoint-000004' / MANIFEST_FILE}: ")


def test_mask_values_outside_0_1_are_refused(grown_like, tmp_path):
    from flm_grow_torch.safetensors_io import load_file, save_file

    g = tmp_path / "g"
    shutil.copytree(grown_like, g)
    t, _ = load_file(str(g / "masks.safetensors"))
    t["hidden"][3] = float("nan")
    save_file(str(g / "masks.safetensors"), t, {"format": "flm-grow-masks"})
    with pytest.raises(ManifestError, match=r"mask 'hidden'\[3\] = nan is outside \[0, 1\]"):
        run_train(g, tmp_path / "run", 1, "--quiet")


def test_command_line_exits_2_with_one_line(grown_like, tmp_path):
    g = tmp_path / "g"
    shutil.copytree(grown_like, g)
    _edit(g, _set("masks.schedule.0.length", -5))
    r = subprocess.run(
        [sys.executable, "-m", "flm_grow_torch.train", str(g), "--out", str(tmp_path / "run"), "--steps", "1", *FLAGS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f'train: {g / MANIFEST_FILE}: field "masks.schedule[0].length" must be an integer >= 0, got -5'
    ]
