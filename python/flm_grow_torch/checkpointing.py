"""Training checkpoints in flm-grow's layout (src/train/checkpointing.ts): <out>/checkpoint-<step>/
with config.json, F32 model.safetensors, masks.safetensors, optimizer.safetensors, tokenizer
files, and flm-grow-manifest.json written LAST with a sha256 of every other file, so a folder
whose manifest verifies is complete and one without is an interrupted save."""

import hashlib
import json
import os
import re
import shutil

MANIFEST_FILE = "flm-grow-manifest.json"
MANIFEST_FORMAT = "flm-grow/1"
PREFIX = "checkpoint-"
SIDE_FILE = re.compile(
    r"^(tokenizer.*|generation_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(json|jinja))$"
)


def checkpoint_dir_name(step):
    return f"{PREFIX}{step:06d}"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(d):
    p = os.path.join(d, MANIFEST_FILE)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        m = json.load(f)
    if m.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{p}: not a {MANIFEST_FORMAT} manifest")
    return m


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


def is_complete(d):
    try:
        m = read_manifest(d)
    except (ValueError, json.JSONDecodeError):
        return False
    if m is None:
        return False
    return all(
        os.path.exists(os.path.join(d, f)) and sha256_file(os.path.join(d, f)) == h for f, h in m["files"].items()
    )


def latest_checkpoint(out):
    for d in reversed(list_checkpoints(out)):
        if is_complete(d):
            return d
    return None


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


class MetricsLog:
    """metrics.jsonl (src/train/metrics.ts): one JSON object per line, appended as we go."""

    def __init__(self, path, resume_at_step=None, truncate=False):
        self.path = path
        self.growth_logged = set()
        if truncate:
            open(path, "w").close()
        elif os.path.exists(path):
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
            if resume_at_step is not None:
                recs = [
                    r
                    for r in recs
                    if (r["step"] <= resume_at_step if r.get("event") == "growth" else r["step"] < resume_at_step)
                ]
            if resume_at_step is not None or (text and not text.endswith("\n")):
                with open(path, "w") as f:
                    f.write("".join(_dumps(r) + "\n" for r in recs))
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
