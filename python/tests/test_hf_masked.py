"""Grown checkpoints in Hugging Face transformers (docs/hf-format.md), judged by transformers itself:

1. a masked folder (masks below 1) is refused by plain `AutoModelForCausalLM.from_pretrained`,
   with transformers' message naming `trust_remote_code=True`;
2. `from_pretrained(folder, trust_remote_code=True)`, with the flm_grow_torch package out of
   reach (only torch + transformers), equals the source's logits (transformers' own, plain
   load) with masks at 0 and `flm-grow forward`'s at mid-annealing masks;
3. a zero-mode grown folder and a baked one load plain and equal the source's logits.

Every family transformers has a class for (Llama with llama3 RoPE, Mistral with a sliding window
shorter than the sequence, Qwen2 with biases, Qwen3 with qk-norm and yarn, from `flm-grow synth
--like <family>`), grown in width, heads, depth and vocabulary. Tele-FLM (no transformers class)
takes part in 2 against `flm-grow forward` only. The folders are written by the CLI (dist/).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file

from flm_grow_torch.masks import apply_values, read_masks, write_masks

CLI = [shutil.which("node") or "node", str(ROOT / "bin" / "flm-grow.js")]
HF_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
GROW = [
    "--hidden-size", "96", "--intermediate-size", "192", "--num-attention-heads", "6",
    "--num-key-value-heads", "3", "--num-hidden-layers", "3", "--placement", "uniform", "--vocab-size", "260",
]  # fmt: skip
SRC_VOCAB, SEQ = 256, 12
TOL = 1e-5  # f32, same weights and function (SPEC §2: extra zero terms may reorder sums)
MID = {"hidden": 0.3, "heads": 0.55, "ffn": 0.7, "layers": 0.45, "vocab": 0.5}

# Loads folders the documented way in a fresh interpreter where `import flm_grow_torch` fails,
# so only torch, transformers and the folders' own files take part; writes each one's logits.
LOAD_REMOTE = """
import sys
sys.modules["flm_grow_torch"] = None
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
ids = load_file(sys.argv[1])["input_ids"]
for folder, out in zip(sys.argv[2::2], sys.argv[3::2]):
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype="auto")
    assert type(model).__name__ == "FlmGrowMaskedForCausalLM" and model.flm_grow_masks is not None
    with torch.no_grad():
        save_file({"logits": model(ids).logits.contiguous()}, out)
"""


def cli(*args: str) -> None:
    r = subprocess.run([*CLI, *args, "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"flm-grow {' '.join(args)}: {r.stderr}"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def hf_logits(folder: Path, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plain transformers: no trust_remote_code."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    with torch.no_grad():
        return model(ids).logits


def remote_logits(folders: list[Path], ids_file: Path, tmp: Path) -> dict[Path, torch.Tensor]:
    outs = [tmp / f"remote-{f.name}.safetensors" for f in folders]
    env = {**os.environ, "HF_HOME": str(tmp / "hf-home"), "PYTHONNOUSERSITE": "1"}
    args = [str(x) for pair in zip(folders, outs, strict=True) for x in pair]
    r = subprocess.run(
        [sys.executable, "-c", LOAD_REMOTE, str(ids_file), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return {f: load_file(str(o))["logits"] for f, o in zip(folders, outs, strict=True)}


def tfjs_logits(folder: Path, ids_file: Path, tmp: Path) -> torch.Tensor:
    out = tmp / f"tfjs-{folder.name}.safetensors"
    cli("forward", str(folder), "--input", str(ids_file), "--out", str(out), "--overwrite")
    return load_file(str(out))["logits"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Per family: source, masked grown, zero-mode grown, clone-grown (masks all 1) and its bake."""
    tmp = tmp_path_factory.mktemp("hf-masked")
    ids = torch.randint(0, SRC_VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    ids_file = tmp / "ids.safetensors"
    save_file({"input_ids": ids}, str(ids_file))
    folders = {}
    for fam in (*HF_FAMILIES, "tele-flm"):
        d = {k: tmp / f"{fam}-{k}" for k in ("src", "masked", "zero", "clone", "baked")}
        cli("synth", "--like", fam, "--dtype", "f32", "--seed", "3", "--out", str(d["src"]))
        cli("grow", str(d["src"]), "--out", str(d["masked"]), *GROW, "--seed", "5")
        if fam in HF_FAMILIES:
            cli("grow", str(d["src"]), "--out", str(d["zero"]), "--mode", "zero", *GROW, "--seed", "5")
            # clone init of hidden and FFN: exact copies, masks all 1, so bake keeps the function
            cli("grow", str(d["src"]), "--out", str(d["clone"]), "--init", "clone", "--hidden-size", "128",
                "--intermediate-size", "256")  # fmt: skip
            cli("bake", str(d["clone"]), "--out", str(d["baked"]))
        # mid-annealing: each group at its own value in (0, 1), written to a copy's masks file
        d["mid"] = tmp / f"{fam}-mid"
        shutil.copytree(d["masked"], d["mid"])
        write_masks(
            str(d["mid"] / "masks.safetensors"),
            apply_values(read_masks(str(d["masked"] / "masks.safetensors")), MID),
        )
        folders[fam] = d
    # bf16: the masks must follow the model's dtype (f32 masks would make the activations f32)
    d = folders["bf16"] = {"src": tmp / "bf16-src", "masked": tmp / "bf16-masked"}
    cli("synth", "--like", "llama", "--dtype", "bf16", "--seed", "3", "--out", str(d["src"]))
    cli("grow", str(d["src"]), "--out", str(d["masked"]), *GROW, "--seed", "5")
    return tmp, ids, ids_file, folders


@pytest.fixture(scope="module")
def remote(work):
    """Every masked and mid-annealing folder's logits, loaded with trust_remote_code=True."""
    tmp, _, ids_file, folders = work
    return remote_logits([d[k] for d in folders.values() for k in ("masked", "mid") if k in d], ids_file, tmp)


@pytest.mark.parametrize("fam", HF_FAMILIES)
def test_plain_load_of_masked_folder_fails_saying_what_to_do(work, fam):
    from transformers import AutoModelForCausalLM

    folders = work[3]
    masked = folders[fam]["masked"]
    with pytest.raises(ValueError, match=r"trust_remote_code=True"):
        AutoModelForCausalLM.from_pretrained(str(masked), dtype=torch.float32)
    # what the user finds in the folder the message points to
    cfg = json.loads((masked / "config.json").read_text())
    assert cfg["flm_grow"]["base_model_type"] == fam and "bake" in cfg["flm_grow"]["how_to_load"]
    assert "trust_remote_code=True" in (masked / "README.md").read_text()


@pytest.mark.parametrize("fam", (*HF_FAMILIES, "tele-flm"))
def test_trust_remote_code_loads_the_masked_model(work, remote, fam):
    tmp, ids, ids_file, folders = work
    d = folders[fam]
    # masks at 0 (as grown): the source's function. Reference: transformers' own plain load of
    # the source; for Tele-FLM, which transformers has no class for, `flm-grow forward`'s.
    ref = hf_logits(d["src"], ids) if fam in HF_FAMILIES else tfjs_logits(d["src"], ids_file, tmp)
    got = remote[d["masked"]]
    assert got.shape[-1] == 260 and torch.isneginf(got[..., SRC_VOCAB:]).all()  # padding ids stay masked
    d0 = rel(got[..., :SRC_VOCAB], ref)
    # mid-annealing masks: `flm-grow forward` (tfjs) on the same folder
    ref_mid = tfjs_logits(d["mid"], ids_file, tmp)
    got_mid = remote[d["mid"]]
    finite = torch.isfinite(ref_mid)
    assert torch.equal(finite, torch.isfinite(got_mid))
    d_mid = rel(got_mid[finite], ref_mid[finite])
    print(f"{fam}: masks 0 vs source {d0:.3g}; mid masks vs flm-grow forward {d_mid:.3g}")
    assert d0 <= TOL, d0
    assert d_mid <= TOL, d_mid
    # and the comparison can fail: the mid masks change the function far past the tolerance
    assert rel(got_mid[..., :SRC_VOCAB], got[..., :SRC_VOCAB]) > 1000 * TOL


@pytest.mark.parametrize("fam", HF_FAMILIES)
@pytest.mark.parametrize("kind", ("zero", "baked"))
def test_zero_mode_and_baked_folders_load_plain_and_equal_the_source(work, fam, kind):
    ids, folders = work[1], work[3]
    folder = folders[fam][kind]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == fam and "auto_map" not in cfg and "flm_grow" not in cfg
    assert not list(folder.glob("*.py"))
    assert "Plain" in (folder / "README.md").read_text()
    ref = hf_logits(folders[fam]["src"], ids)
    got = hf_logits(folder, ids)
    d = rel(got[..., :SRC_VOCAB], ref)
    print(f"{fam} {kind}: plain load vs source {d:.3g}")
    assert d <= TOL, d


def test_trust_remote_code_loads_a_bf16_folder_in_bf16(work, remote):
    ids, folders = work[1], work[3]
    got = remote[folders["bf16"]["masked"]]
    assert got.dtype == torch.bfloat16
    ref = hf_logits(folders["bf16"]["src"], ids, torch.bfloat16)
    assert rel(got[..., :SRC_VOCAB].float(), ref.float()) <= TOL
