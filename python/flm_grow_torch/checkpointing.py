"""Training checkpoints in flm-grow's layout (src/train/checkpointing.ts): <out>/checkpoint-<step>/
with config.json, F32 model.safetensors, masks.safetensors, optimizer.safetensors, tokenizer
files, and flm-grow-manifest.json written LAST with a sha256 of every other file, so a folder
whose manifest verifies is complete and one without is an interrupted save."""

import hashlib
import json
import math
import os
import re
import shutil

from .options import option

# The manifest's names, groups and the files carried along: the declaration src/checkpoint/manifest.ts
# loads too (the field list is in its $comment).
MANIFEST_RULES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data", "manifest.json")
with open(MANIFEST_RULES_FILE, encoding="utf-8") as _f:
    RULES = json.load(_f)
MANIFEST_FILE = RULES["file"]
MANIFEST_FORMAT = RULES["format"]
PREFIX = "checkpoint-"
# never code: a tokenizer*.py (a custom class transformers runs with trust_remote_code) is not carried along
SIDE_FILE = re.compile(RULES["sideFilePattern"])


def checkpoint_dir_name(step):
    return f"{PREFIX}{step:06d}"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ManifestError(ValueError):
    """A manifest that parses but says something impossible (hand-edited or tampered): refused,
    naming the file and the field (exit 2), never trained from or skipped past."""


MASK_GROUPS = tuple(RULES["maskGroups"])
_SHAPES = tuple(RULES["scheduleShapes"])
_CARRIED_HOW = tuple(RULES["carriedHow"])
_LR_KINDS = tuple(option("schedule")["choices"])


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**53 - 1


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _show(v: object) -> str:
    return "missing" if v is _MISSING else json.dumps(v)


_MISSING = object()


def validate_manifest(m: object, where: str, num_layers: int | None = None) -> dict:
    """The fields of a manifest that drive computation, checked as src/checkpoint/manifest.ts parseManifest
    does (same rules, same field names): masks.file and masks.schedule (group, startStep, length
    >= 0, shape), masks.carried, layerMap (the kept source layers 0, 1, 2, ... in order; copies
    naming an existing layer; one entry per layer of config.json when num_layers is given) and a
    training record (step, stageStart, tokens, targetStep, runStartStep, stageStep, lrSchedule)."""

    def bad(msg: str) -> None:
        raise ManifestError(f"{where}: {msg}")

    def get(o: dict, k: str) -> object:
        return o.get(k, _MISSING)

    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        bad(f"not a {MANIFEST_FORMAT} manifest")
    files = m.get("files")
    if not isinstance(files, dict):
        bad('field "files" must be an object of file name -> sha256')
    for f in files:
        n = os.path.normpath(f) if isinstance(f, str) else ""
        if not n or os.path.isabs(f) or n == ".." or n.startswith("../") or "\0" in f:
            bad(f"files: file name {json.dumps(f)} escapes its folder; refusing to read or write it")

    def entry(e: object, path: str) -> None:
        if not isinstance(e, dict):
            bad(f'field "{path}" must be an object {{group, startStep, length, shape}}')
        if get(e, "group") not in MASK_GROUPS:
            bad(f'field "{path}.group" must be one of {", ".join(MASK_GROUPS)}, got {_show(get(e, "group"))}')
        if not _is_int(get(e, "startStep")):
            bad(f'field "{path}.startStep" must be an integer, got {_show(get(e, "startStep"))}')
        if not (_is_int(get(e, "length")) and e["length"] >= 0):
            bad(f'field "{path}.length" must be an integer >= 0, got {_show(get(e, "length"))}')
        if get(e, "shape") not in _SHAPES:
            bad(f'field "{path}.shape" must be one of {", ".join(_SHAPES)}, got {_show(get(e, "shape"))}')

    masks = m.get("masks")
    if masks is not None:
        if not isinstance(masks, dict):
            bad('field "masks" must be an object')
        f = get(masks, "file")
        if not isinstance(f, str) or os.path.isabs(f) or os.path.normpath(f).startswith(".."):
            bad(f'field "masks.file": file name {_show(f)} escapes its folder; refusing to read or write it')
        sched = get(masks, "schedule")
        if not isinstance(sched, list):
            bad('field "masks.schedule" must be an array')
        seen = set()
        for i, e in enumerate(sched):
            entry(e, f"masks.schedule[{i}]")
            if e["group"] in seen:
                bad(f'field "masks.schedule[{i}].group": group "{e["group"]}" is scheduled twice')
            seen.add(e["group"])
        c = masks.get("carried")
        if c is not None:
            if not isinstance(c, dict):
                bad('field "masks.carried" must be an object {sourceStageStep, groups}')
            if not (_is_int(get(c, "sourceStageStep")) and c["sourceStageStep"] >= 0):
                bad(
                    f'field "masks.carried.sourceStageStep" must be an integer >= 0, got {_show(get(c, "sourceStageStep"))}'
                )
            if not isinstance(get(c, "groups"), list):
                bad('field "masks.carried.groups" must be an array')
            for i, g in enumerate(c["groups"]):
                p = f"masks.carried.groups[{i}]"
                if not isinstance(g, dict):
                    bad(f'field "{p}" must be an object {{group, how, entry}}')
                if get(g, "group") not in MASK_GROUPS:
                    bad(f'field "{p}.group" must be one of {", ".join(MASK_GROUPS)}, got {_show(get(g, "group"))}')
                if get(g, "how") not in _CARRIED_HOW:
                    bad(f'field "{p}.how" must be one of {", ".join(_CARRIED_HOW)}, got {_show(get(g, "how"))}')
                entry(get(g, "entry"), f"{p}.entry")
    lm = m.get("layerMap")
    if lm is not None:
        if not isinstance(lm, list):
            bad('field "layerMap" must be an array')
        kept = sum(1 for e in lm if isinstance(e, dict) and e.get("inserted") is False)
        nxt = 0
        for i, e in enumerate(lm):
            p = f"layerMap[{i}]"
            if not isinstance(e, dict):
                bad(f'field "{p}" must be an object {{source, inserted}}')
            if not isinstance(get(e, "inserted"), bool):
                bad(f'field "{p}.inserted" must be a boolean, got {_show(get(e, "inserted"))}')
            if not (_is_int(get(e, "source")) and 0 <= e["source"] < kept):
                bad(f'field "{p}.source" must be a source layer index in [0, {kept}), got {_show(get(e, "source"))}')
            if e["inserted"] is False:
                if e["source"] != nxt:
                    bad(
                        f'field "{p}.source": the kept source layers must be 0, 1, 2, ... in order; expected {nxt}, got {e["source"]}'
                    )
                nxt += 1
        if num_layers is not None and len(lm) != num_layers:
            bad(f'field "layerMap" has {len(lm)} entries, but config.json has num_hidden_layers {num_layers}')
    if m.get("kind") == "train":
        x = m.get("extra")
        if not isinstance(x, dict):
            bad('field "extra" must be an object')
        for k in RULES["trainCounters"]:
            if not (_is_int(get(x, k)) and x[k] >= 0):
                bad(f'field "extra.{k}" must be an integer >= 0, got {_show(get(x, k))}')
        step = x["step"]
        if x["stageStart"] > step:
            bad(f'field "extra.stageStart" {x["stageStart"]} is after extra.step {step}')
        r = get(x, "runStartStep")
        if r is not _MISSING and r is not None and not (_is_int(r) and 0 <= r <= step):
            bad(f'field "extra.runStartStep" must be an integer in [0, extra.step={step}], got {_show(r)}')
        ss = get(x, "stageStep")
        if ss is not _MISSING and ss != step - x["stageStart"]:
            bad(
                f'field "extra.stageStep" must be extra.step - extra.stageStart = {step - x["stageStart"]}, got {_show(ss)}'
            )
        s = get(x, "lrSchedule")
        if not isinstance(s, dict):
            bad('field "extra.lrSchedule" must be an object')
        p = "extra.lrSchedule"
        if get(s, "schedule") not in _LR_KINDS:
            bad(f'field "{p}.schedule" must be one of {", ".join(_LR_KINDS)}, got {_show(get(s, "schedule"))}')
        if not (_is_num(get(s, "lr")) and s["lr"] >= 0):
            bad(f'field "{p}.lr" must be a finite number >= 0, got {_show(get(s, "lr"))}')
        if not (_is_num(get(s, "minLr")) and 0 <= s["minLr"] <= s["lr"]):
            bad(f'field "{p}.minLr" must be in [0, lr={_show(s["lr"])}], got {_show(get(s, "minLr"))}')
        if not (_is_int(get(s, "totalSteps")) and s["totalSteps"] > 0):
            bad(f'field "{p}.totalSteps" must be an integer > 0, got {_show(get(s, "totalSteps"))}')
        if not (_is_int(get(s, "warmupSteps")) and 0 <= s["warmupSteps"] <= s["totalSteps"]):
            bad(
                f'field "{p}.warmupSteps" must be an integer in [0, totalSteps={s["totalSteps"]}], got {_show(get(s, "warmupSteps"))}'
            )
        st = get(s, "startStep")
        if st is not _MISSING and not (_is_int(st) and st >= 0):
            bad(f'field "{p}.startStep" must be an integer >= 0, got {_show(st)}')
    return m


def read_manifest(d, num_layers: int | None = None):
    """The folder's manifest, validated (validate_manifest), or None when it has none."""
    p = os.path.join(d, MANIFEST_FILE)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        m = json.load(f)
    return validate_manifest(m, p, num_layers)


def _files_under(d):
    """Every file of a checkpoint folder but the manifest and hidden ones, as relative paths; the
    shards of a sharded save (sharded/, including DCP's .metadata) are files of the folder too."""
    out = []
    for root, dirs, files in os.walk(d):
        rel = os.path.relpath(root, d)
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in files:
            if rel == "." and (f == MANIFEST_FILE or f.startswith(".")):
                continue
            out.append(f if rel == "." else os.path.join(rel, f))
    return sorted(out)


def write_manifest_last(d, manifest):
    files = {f: sha256_file(os.path.join(d, f)) for f in _files_under(d)}
    full = dict(manifest, files=files)
    tmp = os.path.join(d, f".{MANIFEST_FILE}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(full, indent=2) + "\n")
    os.replace(tmp, os.path.join(d, MANIFEST_FILE))
    return full


def read_side_files(src):
    """Tokenizer and generation files, read once at start: a resumed run's source checkpoint
    may be pruned before the run's last save."""
    out = {}
    for f in os.listdir(src):
        if SIDE_FILE.match(f):
            with open(os.path.join(src, f), "rb") as fh:
                out[f] = fh.read()
    return out


def write_side_files(files, dst):
    for f, data in files.items():
        with open(os.path.join(dst, f), "wb") as fh:
            fh.write(data)


def list_checkpoints(out):
    if not os.path.isdir(out):
        return []
    found = []
    for f in os.listdir(out):
        if f.startswith(PREFIX) and f[len(PREFIX) :].isdigit():
            found.append((int(f[len(PREFIX) :]), os.path.join(out, f)))
    return [d for _, d in sorted(found)]


def _safetensors_size(path: str) -> int | None:
    """The size a safetensors file's header says it has (8 + header + data), or None if unreadable."""
    try:
        with open(path, "rb") as f:
            b = f.read(8)
            if len(b) < 8:
                return 8
            n = int.from_bytes(b, "little")
            if n > 100 << 20:
                return None
            h = f.read(n)
            if len(h) < n:
                return 8 + n
            header = json.loads(h)
        return 8 + n + max([t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"], default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def checkpoint_damage(d: str) -> str | None:
    """What is wrong with a saved checkpoint folder, or None when it is complete (as
    src/train/checkpointing.ts checkpointDamage): an interrupted save, a manifest that is not JSON,
    a listed file missing, truncated or altered. A manifest that parses but is impossible raises
    ManifestError (refused, not skipped)."""
    p = os.path.join(d, MANIFEST_FILE)
    if not os.path.exists(p):
        return f"no {MANIFEST_FILE} (an interrupted save)"
    try:
        with open(p) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        return f"{MANIFEST_FILE} is unreadable ({e})"
    validate_manifest(m, p)
    for f, h in m["files"].items():
        fp = os.path.join(d, f)
        if not os.path.exists(fp):
            return f"{f}, listed in its manifest, is missing"
        if sha256_file(fp) != h:
            size = os.path.getsize(fp)
            need = _safetensors_size(fp) if f.endswith(".safetensors") else None
            if need is not None and size < need:
                return f"{f} is truncated ({size} of the {need} bytes its header needs)"
            return f"{f} does not match its manifest (sha256 differs; {size} bytes)"
    return None


def is_complete(d):
    return checkpoint_damage(d) is None


def latest_checkpoint(out, warn=None):
    """The newest complete checkpoint of a run folder, or None. Newer damaged ones are gone
    past, never silently: `warn` gets one line naming each, why, and the step resumed from."""
    skipped = []
    found = None
    for d in reversed(list_checkpoints(out)):
        why = checkpoint_damage(d)
        if why is None:
            found = d
            break
        skipped.append(f"{d} ({why})")
    if skipped and warn is not None:
        where = (
            f"resuming from {found} at step {(read_manifest(found).get('extra') or {}).get('step')}"
            if found is not None
            else "no complete checkpoint is left: starting again from the input checkpoint"
        )
        warn(f"skipped damaged checkpoint{'s' if len(skipped) > 1 else ''} {', '.join(skipped)}; {where}")
    return found


def prune_checkpoints(out, keep, protect):
    all_ = list_checkpoints(out)
    for d in all_[: max(0, len(all_) - keep)]:
        if d != protect:
            shutil.rmtree(d, ignore_errors=True)


def source_identity(ckpt_dir, tensors_info):
    """manifest.source as growth/grow.ts sourceIdentity computes it."""
    idx = os.path.join(ckpt_dir, "model.safetensors.index.json")
    out = {"path": os.path.abspath(ckpt_dir), "configSha256": sha256_file(os.path.join(ckpt_dir, "config.json"))}
    if os.path.exists(idx):
        out["indexSha256"] = sha256_file(idx)
    out["parameters"], out["bytes"] = tensors_info
    return out


METRICS_FORMAT_VERSION = 2
# the first line of every metrics.jsonl, as src/train/metrics.ts METRICS_HEADER writes it
METRICS_HEADER = {
    "event": "format",
    "version": METRICS_FORMAT_VERSION,
    "steps": "optimizer updates done (Hugging Face Trainer global_step); checkpoint-<step> holds the weights after them",
}


class MetricsLog:
    """metrics.jsonl (src/train/metrics.ts): one JSON object per line, appended as we go.

    A step record's "step" is the number of optimizer updates done (the HF Trainer's global_step).
    Version 1 files (no format line) logged the 0-based update index: read with step + 1 and
    rewritten in version 2 when a run appends to them.
    """

    def __init__(self, path: str, resume_at_step: int | None = None, truncate: bool = False) -> None:
        self.path = path
        self.growth_logged: set[str] = set()
        if truncate or not os.path.exists(path):
            with open(path, "w") as f:
                f.write(_dumps(METRICS_HEADER) + "\n")
        else:
            recs = []
            with open(path) as f:
                text = f.read()
            lines = text.split("\n")
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    if i == len(lines) - 1:  # a torn last line from a crash mid-write
                        continue
                    raise
            version = 1
            if recs and recs[0].get("event") == "format":
                version = recs.pop(0).get("version")
                if version != METRICS_FORMAT_VERSION:
                    raise ValueError(f"{path}: metrics format version {version!r}; this engine reads versions 1 and 2")
            elif version == 1:
                for r in recs:
                    if r.get("event") != "growth":
                        r["step"] += 1
            if resume_at_step is not None:
                # a checkpoint at step N holds N updates: records up to N stay
                recs = [r for r in recs if r["step"] <= resume_at_step]
            if resume_at_step is not None or (text and not text.endswith("\n")) or version != METRICS_FORMAT_VERSION:
                with open(path, "w") as f:
                    f.write("".join(_dumps(r) + "\n" for r in [METRICS_HEADER, *recs]))
            for r in recs:
                if r.get("event") == "growth":
                    self.growth_logged.add(f"{r['step']}:{r['stage']}")
        self.f = open(path, "a")

    def _write(self, r):
        self.f.write(_dumps(r) + "\n")
        self.f.flush()

    def log_step(self, m):
        self._write(m)

    def log_growth(self, step, stage, detail=None):
        key = f"{step}:{stage}"
        if key in self.growth_logged:
            return
        self.growth_logged.add(key)
        r = {"event": "growth", "step": step, "stage": stage}
        if detail is not None:
            r["detail"] = detail
        self._write(r)

    def close(self):
        self.f.close()


def _finite(v):
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN: a diverged loss is written as null, as the TS log does
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


def _dumps(r):
    return json.dumps({k: _finite(v) for k, v in r.items()}, separators=(",", ":"))
