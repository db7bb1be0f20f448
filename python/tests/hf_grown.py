"""Tiny masked grown checkpoints of each transformers family, made by the flm-grow CLI itself
(`flm-grow synth` + `flm-grow grow`), for test_hf_attach.py and test_hf_trainer.py.

Growth: width 64 -> 96, heads 4 -> 6 with GQA (KV heads 2 -> 3), FFN 128 -> 192, one inserted
layer (2 -> 3); Llama also grows its vocabulary with padding ids (mask 0 for good) and Qwen3 with
learnable new tokens (the vocab mask anneals). The sources: Llama and Qwen2 tie their embeddings,
Mistral has a sliding window (8) shorter than the test sequences, Qwen3 has qk-norm and yarn RoPE.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "bin" / "flm-grow.js"
CORPUS = ROOT / "fixtures" / "corpus" / "fortunes.txt"
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
VOCAB = {"llama": ["--vocab-size", "272"], "qwen3": ["--vocab-size", "272", "--vocab-new", "tokens"]}
SOURCE_VOCAB = 256


def flm_grow(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(["node", str(CLI), *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise RuntimeError(f"flm-grow {' '.join(args[:2])} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r


_ROOT: list[Path] = []


def shared_root() -> Path:
    """One temporary folder per pytest process for the grown checkpoints, so that both test files
    use the same ones (each costs two CLI runs); removed at exit."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="flm-grow-hf-")))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return _ROOT[0]


def make_grown(root: Path, family: str, anneal_steps: int = 20) -> tuple[Path, Path]:
    """(source, grown) folders under root for `family` (made once per root)."""
    src, grown = root / f"src-{family}", root / f"grown-{family}-a{anneal_steps}"
    if not (src / "config.json").exists():
        flm_grow("synth", "--like", family, "--out", str(src), "--dtype", "f32", "--quiet")
    if not (grown / "config.json").exists():
        flm_grow(
            "grow",
            str(src),
            "--out",
            str(grown),
            "--hidden-size",
            "96",
            "--num-attention-heads",
            "6",
            "--num-key-value-heads",
            "3",
            "--intermediate-size",
            "192",
            "--num-hidden-layers",
            "3",
            "--anneal-steps",
            str(anneal_steps),
            "--quiet",
            *VOCAB.get(family, []),
        )
    return src, grown


def rel(a, b) -> float:  # noqa: ANN001
    """max |a - b| / max |b| over the entries where b is finite (a must be infinite where b is)."""
    import torch

    fin = torch.isfinite(b)
    assert torch.equal(torch.isfinite(a), fin), "infinite logits differ"
    assert bool((a[~fin] == b[~fin]).all()), "infinite logits differ in sign"
    return ((a[fin] - b[fin]).abs().max() / b[fin].abs().max()).item()
