"""What makes a checkpoint folder a Hugging Face model (docs/hf-format.md), the Python side of
src/checkpoint/hf-folder.ts (used by the torch trainer's saves):

- a masked folder (masks below 1) gets the masked config.json (model_type "flm_grow_masked",
  which plain transformers refuses; auto_map to the folder's modeling files) and the remote code
  that loads it with trust_remote_code=True: configuration_flm_grow.py and modeling_flm_grow.py
  from this directory, and ../masks.py as flm_grow_masks.py, all copied from the package, never
  from an input folder;
- a plain folder gets the plain family config, no modeling files;
- every folder gets README.md, a model card filled from model_card.md (the template src/ fills too).

Imports no torch: the writers need none.
"""

import json
import os
import re
from pathlib import Path

from ..families import MASKED_ARCHITECTURE, MASKED_CONFIG_KEY, MASKED_MODEL_TYPE

HERE = Path(__file__).resolve().parent
MASKS_PY = HERE.parent / "masks.py"
CARD_TEMPLATE = HERE / "model_card.md"
CARD_FILE = "README.md"
# file in the folder -> where it comes from in the package
REMOTE_SOURCES = {
    "configuration_flm_grow.py": HERE / "configuration_flm_grow.py",
    "modeling_flm_grow.py": HERE / "modeling_flm_grow.py",
    "flm_grow_masks.py": MASKS_PY,
}
REMOTE_FILES = tuple(REMOTE_SOURCES)
MASKED_AUTO_MAP = {
    "AutoConfig": "configuration_flm_grow.FlmGrowMaskedConfig",
    "AutoModelForCausalLM": "modeling_flm_grow.FlmGrowMaskedForCausalLM",
}
MASKED_LOAD_NOTE = (
    "MSG-masked checkpoint: its masks (masks.safetensors) are part of the model. Load it with "
    "AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True) (this folder's modeling_flm_grow.py "
    "attaches the masks), or write the plain model with `flm-grow bake` once every mask is 1. "
    "Loaded as a plain model, its weights compute a different function."
)
_BASE_LINE = re.compile(r'^BASE_MODEL_TYPE = "[^"]*"$', re.MULTILINE)


def masked_config_json(plain: dict) -> dict:
    """src/spec/config.ts maskedConfigJson: the base family's model_type / architectures (and auto_map)
    kept under `flm_grow`, every other key as it was."""
    rest = {k: v for k, v in plain.items() if k not in ("model_type", "architectures", "auto_map")}
    meta = {"base_model_type": plain.get("model_type")}
    if plain.get("architectures") is not None:
        meta["base_architectures"] = plain["architectures"]
    if plain.get("auto_map") is not None:
        meta["base_auto_map"] = plain["auto_map"]
    meta.update(masks_file="masks.safetensors", how_to_load=MASKED_LOAD_NOTE)
    return {
        "architectures": [MASKED_ARCHITECTURE],
        "model_type": MASKED_MODEL_TYPE,
        "auto_map": dict(MASKED_AUTO_MAP),
        MASKED_CONFIG_KEY: meta,
        **rest,
    }


def remote_files(base_model_type: str) -> dict[str, str]:
    """The modeling files of a masked folder whose base family has `base_model_type`: the package's
    files, configuration_flm_grow.py with its BASE_MODEL_TYPE line set (src/checkpoint/hf-folder.ts the same)."""
    out = {name: src.read_text(encoding="utf-8") for name, src in REMOTE_SOURCES.items()}
    text = out["configuration_flm_grow.py"]
    if len(_BASE_LINE.findall(text)) != 1:
        raise RuntimeError(f"{REMOTE_SOURCES['configuration_flm_grow.py']}: no single BASE_MODEL_TYPE line")
    out["configuration_flm_grow.py"] = _BASE_LINE.sub(f"BASE_MODEL_TYPE = {json.dumps(base_model_type)}", text)
    return out


def render_card(fields: dict[str, str]) -> str:
    """model_card.md with every {{name}} replaced; a name the template has and `fields` lacks is an error."""
    text = CARD_TEMPLATE.read_text(encoding="utf-8")
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(fields))
    if missing:
        raise KeyError(f"{CARD_TEMPLATE}: no value for {', '.join(missing)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(fields[m.group(1)]), text)


def load_code(folder: str, masked: bool, family: str) -> tuple[str, str]:
    """The card's loading snippet and the note under it (src/checkpoint/hf-folder.ts loadCode)."""
    path = json.dumps(folder)
    if masked:
        code = (
            "from transformers import AutoModelForCausalLM\n\n"
            f"model = AutoModelForCausalLM.from_pretrained({path}, trust_remote_code=True)\n"
            "# the masks: model.flm_grow_masks.set_step(n) sets them as the schedule has them n steps after growth"
        )
        note = (
            "Plain `AutoModelForCausalLM.from_pretrained(folder)` refuses this folder (its model_type "
            f"`{MASKED_MODEL_TYPE}` is not a transformers model): its weights without the masks compute a different "
            "function. `trust_remote_code=True` runs this folder's modeling_flm_grow.py and flm_grow_masks.py (copied "
            "from flm-grow; they need only torch and transformers). `flm-grow bake <folder> --out <plain>` writes the "
            "plain model once training has annealed every mask to 1."
        )
    elif family == "tele-flm":
        code = f"from flm_grow_torch import load_model\n\nmodel = load_model({path})"
        note = (
            "transformers has no Tele-FLM class of its own: load the folder with flm-grow's torch engine (above) or "
            "with the published Tele-FLM modeling code (CofeAI/Tele-FLM, trust_remote_code=True)."
        )
    else:
        code = f"from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained({path})"
        note = "A plain checkpoint of its family: no masks, no remote code."
    return code, note


def mask_state(masked: bool, below: list[dict]) -> str:
    if not masked:
        return "Plain: every mask is 1 (or the folder has none); the weights are the model."

    def one(g: dict) -> str:
        n = g["count"]
        return f"{g['group']} ({n} unit{'' if n == 1 else 's'}, min {float(format(g['minValue'], '.6g'))})"

    groups = ", ".join(one(g) for g in below)
    return f"Still masked: masks below 1 in {groups}. The masks (masks.safetensors) are part of the model."


def write_model_files(folder: str, plain_config: dict, masked: bool, card: dict[str, str]) -> list[str]:
    """Write config.json (masked or plain), the remote code (masked only) and README.md into
    `folder`; returns the names written."""
    cfg = masked_config_json(plain_config) if masked else plain_config
    files = {"config.json": json.dumps(cfg, indent=2) + "\n"}
    if masked:
        files.update(remote_files(str(plain_config.get("model_type"))))
    files[CARD_FILE] = render_card(card)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text)
    return list(files)


def groups_below_one(m: dict) -> list[dict]:
    """src/checkpoint/masks.ts groupsBelowOne: each annealed group with entries below 1 (vocab: new tokens only)."""
    out = []

    def scan(group, tensors):
        vals = [float(x) for t in tensors for x in t.reshape(-1).tolist()]
        low = [v for v in vals if v < 1]
        if low:
            out.append({"group": group, "minValue": min(low), "count": len(low)})

    scan("hidden", [m["hidden"]])
    scan("heads", [l["heads"] for l in m["layers"]])
    scan("ffn", [l["ffn"] for l in m["layers"]])
    scan("layers", [l["residual"] for l in m["layers"]])
    tokens = m.get("vocab_tokens")
    if tokens is not None:
        scan("vocab", [m["vocab"][tokens == 1]])
    return out


_TITLE_FAMILY = {"llama": "Llama", "tele-flm": "Tele-FLM", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}


def _schedule_lines(schedule: list[dict] | None) -> str:
    if not schedule:
        return ""
    return "\n\nMask schedule (optimizer steps after growth):\n\n" + "\n".join(
        f"- {e['group']}: {e['shape']} from step {e['startStep']} over {e['length']} steps" for e in schedule
    )


def _source_text(s: dict | None) -> str:
    if not s:
        return "unknown"
    return f"`{os.path.basename(s['path'])}` ({s['parameters']:,} parameters, config.json sha256 {s['configSha256'][:16]}…)"


def train_card(folder: str, cfg, masks: dict | None, manifest: dict, version: str) -> dict[str, str]:
    """The card fields of a training checkpoint (src/checkpoint/hf-folder.ts modelCard, kind "train"); `cfg` a
    config.ModelConfig, `manifest` the save's manifest without files."""
    below = groups_below_one(masks) if masks is not None else []
    masked = bool(below)
    fam = _TITLE_FAMILY.get(cfg.family, cfg.family)
    t = manifest.get("extra", {})
    source = f"- read: {_source_text(manifest.get('source'))}"
    if t.get("data"):
        d = t["data"]
        source += f"\n- data: `{d['path']}` ({d['tokens']} tokens, sha256 {d['sha256'][:16]}…)"
    code, note = load_code(folder, masked, cfg.family)
    na = lambda v: "n/a" if v is None else f"{v}"
    return {
        "tag": "msg-masked" if masked else "plain",
        "title": f"Trained {fam} checkpoint: {cfg.num_layers} layers, hidden {cfg.hidden_size} ({'masked' if masked else 'plain'})",
        "summary": f"Written by `flm-grow train` at optimizer step {t.get('step', '?')}"
        + (f" ({t['stageStep']} steps since growth)" if t.get("stageStep") is not None else "")
        + ".",
        "source": source,
        "plan": "Training, not growth: the plan is in the grown checkpoint this run started from (its card and manifest)."
        + _schedule_lines((manifest.get("masks") or {}).get("schedule")),
        "mask_state": mask_state(masked, below),
        "load_code": code,
        "load_note": note,
        "verification": f"Training losses at this save: last {na(t.get('lastLoss'))}, eval {na(t.get('evalLoss'))}.",
        "version": version,
        "kind": "train",
    }
