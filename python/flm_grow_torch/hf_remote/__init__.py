"""What makes a checkpoint folder a Hugging Face model (docs/hf-format.md), the Python side of
src/hf-folder.ts (used by the torch trainer's saves):

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
    """src/config.ts maskedConfigJson: the base family's model_type / architectures (and auto_map)
    kept under `flm_grow`, every other key as it was."""
    rest = {k: v for k, v in plain.items() if k not in ("model_type", "architectures", "auto_map")}
    meta = {"base_model_type": plain.get("model_type"), "base_architectures": plain.get("architectures")}
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
    files, configuration_flm_grow.py with its BASE_MODEL_TYPE line set (src/hf-folder.ts the same)."""
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
    """The card's loading snippet and the note under it (src/hf-folder.ts loadCode)."""
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
    groups = ", ".join(
        f"{g['group']} ({g['count']} unit{'' if g['count'] == 1 else 's'}, min {g['minValue']})" for g in below
    )
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
