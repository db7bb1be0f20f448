"""python -m flm_grow_torch.passes <verb> <checkpoint> --input ids.safetensors ...

The torch engine of flm-grow's compute passes, layer-streamed as src/model/streaming.ts:

  forward    logits F32 [B,T,V] (and with --hidden, hidden_states.N F32 [B,T,H], N = 0..L as HF)
             into --output (safetensors); `forward` and `verify` read them back in TS
  distances  each layer's input -> output distance on the residual stream (layer selection,
             src/growth/distance.ts), printed as the FLM_GROW_RESULT line

Memory does not grow with depth: weights are read from the memory-mapped shards (the
`safetensors` package's safe_open) one tensor band at a time, converted to the compute dtype, used
and dropped; a shard's mapping is closed after each read, so its pages do not stay in the
process's resident set either. Every linear map runs in bands of output rows of at most
--max-block-bytes (the LM head in blocks over the vocabulary, a wide MLP in blocks of FFN units),
so the peak is the residual stream, one band and one layer's activations, whatever the depth or
width. The ids come from TS (one calibration-token stream for both engines).

Masks (masks.safetensors, as masks.attach_masks applies them; --no-masks for the plain model):
embedding ⊙ m_h; RMSNorm statistics over unmasked coordinates; head j's output × m_a[j] and
o_proj's output ⊙ m_h · r_l; down_proj's input ⊙ m_f and output ⊙ m_h · r_l; logits + log(m_v).

Progress goes to stderr as `FLM_GROW_PROGRESS <done> <total>` (weight bytes in f32, the unit of
the tfjs pass's bar). Bad input ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open

from .config import ModelConfig, read_config
from .masks import MASKS_FILE, read_masks
from .model import _HAS_GQA, rope_frequencies, rope_tables, window_mask
from .safetensors_io import load_file, save_file

DEFAULT_MAX_BLOCK_BYTES = 1 << 30
PROGRESS = "FLM_GROW_PROGRESS"
RESULT = "FLM_GROW_RESULT"


class PassError(ValueError):
    """Bad input or a model that cannot be run: reported as one line, exit code 2."""


# ---- weights, read in bands from the memory-mapped shards --------------------------------------


class Weights:
    """The checkpoint's tensors by name -> shard; reads open the shard (mmap) for that read only."""

    def __init__(self, ckpt_dir: str, device: torch.device, dtype: torch.dtype) -> None:
        self.dir = ckpt_dir
        self.device = device
        self.dtype = dtype
        index = os.path.join(ckpt_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map: dict[str, str] = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        elif os.path.exists(os.path.join(ckpt_dir, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            raise PassError(f"{ckpt_dir}: neither model.safetensors nor model.safetensors.index.json")
        self.where: dict[str, str] = {}
        self.shapes: dict[str, list[int]] = {}
        for name in files:
            path = os.path.join(ckpt_dir, name)
            try:
                with safe_open(path, framework="pt") as h:
                    for k in h.keys():
                        self.where[k] = path
                        self.shapes[k] = list(h.get_slice(k).get_shape())
            except Exception as e:  # the package's own message names the problem
                raise PassError(f"{path}: cannot read safetensors: {e}") from None

    def has(self, name: str) -> bool:
        return name in self.where

    def shape(self, name: str) -> list[int]:
        if name not in self.where:
            raise PassError(f"{self.dir}: tensor {name!r} is missing")
        return self.shapes[name]

    def rows(self, name: str, r0: int | None = None, r1: int | None = None) -> torch.Tensor:
        """Rows [r0, r1) of a tensor (all when None), in the compute dtype and device, finite."""
        shape = self.shape(name)
        with safe_open(self.where[name], framework="pt") as h:
            s = h.get_slice(name)
            t = s[:] if r0 is None else s[r0:r1]
        t = t.to(device=self.device, dtype=self.dtype)
        # a sum is one fast multi-threaded pass; isfinite() over every element costs more than the
        # matmul on CPU. A non-finite sum (a bad value, or finite values overflowing) is then
        # looked at element by element.
        if not bool(torch.isfinite(t.sum(dtype=torch.float32))) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).flatten().nonzero()[0])
            cols = int(math.prod(shape[1:])) if len(shape) > 1 else 1
            row = (r0 or 0) + bad // cols
            raise PassError(f"{self.dir}: tensor {name} has a non-finite value at row {row}, column {bad % cols}")
        return t


# ---- one pass ---------------------------------------------------------------------------------


class Pass:
    """The streamed forward of one checkpoint (masked when masks are given)."""

    def __init__(
        self,
        ckpt_dir: str,
        *,
        masks: bool = True,
        device: str = "cpu",
        dtype: str = "f32",
        max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> None:
        try:
            self.cfg: ModelConfig = read_config(ckpt_dir)
        except Exception as e:
            raise PassError(f"{ckpt_dir}: {e}") from None
        self.dev = torch.device(device)
        self.dt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
        self.w = Weights(ckpt_dir, self.dev, self.dt)
        self.dir = ckpt_dir
        self.max_block = max(1, max_block_bytes)
        self.on_bytes = on_bytes
        self.done = 0
        c = self.cfg
        H, q, kv, Fd = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
        # f32 bytes of each layer's weights (the tfjs pass's progress unit, stream-memory.ts layerF32Bytes)
        self.layer_bytes = 4 * (2 * H + 2 * H * q + 2 * H * kv + 3 * H * Fd)
        self.total = 0
        self.m: dict[str, Any] | None = None
        mp = os.path.join(ckpt_dir, MASKS_FILE)
        if masks and os.path.exists(mp):
            try:
                m = read_masks(mp, c)
            except Exception as e:
                raise PassError(f"{mp}: {e}") from None
            to = {"device": self.dev, "dtype": torch.float32}
            self.m = {
                "hidden": m["hidden"].to(**to),
                "hidden_sum": m["hidden"].to(**to).sum(),
                # log(m), -inf at 0 (padding ids): masks.MaskHandle._vocab_bias at inference
                "vocab_bias": torch.where(m["vocab"] == 0, torch.tensor(float("-inf")), torch.log(m["vocab"])).to(**to),
                "layers": [{k: v.to(**to) for k, v in l.items()} for l in m["layers"]],
            }

    # -- progress

    def tick(self, nbytes: int) -> None:
        self.done += nbytes
        if self.on_bytes is not None:
            self.on_bytes(self.done, self.total)

    # -- building blocks

    def norm(self, x: torch.Tensor, g: torch.Tensor, masked: bool = True) -> torch.Tensor:
        """RMSNorm in f32 (model.RMSNorm; masked statistics sum(m·x²)/sum(m) as masks.py)."""
        h = x.float()
        if masked and self.m is not None:
            var = (h.pow(2) * self.m["hidden"]).sum(-1, keepdim=True) / self.m["hidden_sum"]
        else:
            var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.cfg.rms_norm_eps)
        return g * h.to(x.dtype)

    def band_rows(self, cols: int) -> int:
        return max(1, self.max_block // (4 * cols))

    def linear(self, x: torch.Tensor, name: str, count: bool = True) -> torch.Tensor:
        """x @ W^T with W read in bands of output rows (no band over max_block bytes in f32)."""
        out, cols = self.w.shape(name)
        rows = self.band_rows(cols)
        if rows >= out:
            y = F.linear(x, self.w.rows(name))
        else:
            y = x.new_empty((*x.shape[:-1], out))
            for r0 in range(0, out, rows):
                r1 = min(out, r0 + rows)
                y[..., r0:r1] = F.linear(x, self.w.rows(name, r0, r1))
                if count:  # the bar moves within a wide layer; run() squares the count per layer
                    self.tick(4 * (r1 - r0) * cols)
        return y

    # -- the model

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """x_0 [B,T,H]: only the embedding rows of the ids used, read in contiguous runs."""
        name = "model.embed_tokens.weight"
        uniq = sorted(set(ids.flatten().tolist()))
        slot = {v: k for k, v in enumerate(uniq)}
        parts = []
        k = 0
        while k < len(uniq):
            e = k + 1
            while e < len(uniq) and uniq[e] == uniq[e - 1] + 1:
                e += 1
            parts.append(self.w.rows(name, uniq[k], uniq[e - 1] + 1))
            k = e
        table = torch.cat(parts, 0)
        local = torch.tensor([slot[v] for v in ids.flatten().tolist()], device=self.dev).view(ids.shape)
        x = table[local]
        if self.cfg.input_scale != 1:
            x = x * self.cfg.input_scale
        if self.m is not None:
            x = x * self.m["hidden"].to(x.dtype)
        return x

    def rope(self, T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        c = self.cfg
        # as model.LlamaForCausalLM: frequencies for max_position_embeddings, 'dynamic' RoPE
        # recomputed for a longer sequence
        inv, scaling = rope_frequencies(c, c.max_position_embeddings)
        if c.rope["type"] == "dynamic" and T > c.max_position_embeddings:
            inv = rope_frequencies(c, T)[0]
        cos, sin = rope_tables(inv, T, self.dev, scaling)
        w = c.sliding_window
        allowed = window_mask(T, w, self.dev) if w is not None and T > w else None
        return cos, sin, allowed

    def attention(self, l: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed) -> torch.Tensor:
        c = self.cfg
        B, T, H = x.shape
        nh, nkv, hd = c.num_heads, c.num_kv_heads, c.head_dim
        p = f"model.layers.{l}.self_attn."
        h = self.norm(x, self.w.rows(f"model.layers.{l}.input_layernorm.weight"))
        q, k, v = (self.linear(h, p + f"{n}_proj.weight") for n in "qkv")
        if c.qkv_bias:
            q, k, v = (t + self.w.rows(p + f"{n}_proj.bias") for t, n in zip((q, k, v), "qkv", strict=True))
        q, k, v = q.view(B, T, nh, hd), k.view(B, T, nkv, hd), v.view(B, T, nkv, hd)
        if c.qk_norm:  # Qwen3: per head over head_dim, before RoPE, never masked
            q = self.norm(q, self.w.rows(p + "q_norm.weight"), masked=False)
            k = self.norm(k, self.w.rows(p + "k_norm.weight"), masked=False)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cs, sn = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cs + _rotate_half(q) * sn
        k = k * cs + _rotate_half(k) * sn
        g = nh // nkv
        gqa = {"enable_gqa": True} if g > 1 and _HAS_GQA else {}
        if g > 1 and not gqa:  # query head j reads KV head floor(j / g)
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        if allowed is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, **gqa)
        if self.m is not None:
            out = out * self.m["layers"][l]["heads"].to(out.dtype)[None, :, None, None]
        y = self.linear(out.transpose(1, 2).reshape(B, T, nh * hd), p + "o_proj.weight")
        if self.m is not None:
            y = y * (self.m["hidden"] * self.m["layers"][l]["residual"]).to(y.dtype)
        return x + y

    def mlp(self, l: int, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        H, Fd = c.hidden_size, c.intermediate_size
        p = f"model.layers.{l}.mlp."
        h = self.norm(x, self.w.rows(f"model.layers.{l}.post_attention_layernorm.weight"))
        units = self.band_rows(2 * H)  # gate and up rows of a block together
        ffn = self.m["layers"][l]["ffn"] if self.m is not None else None
        if units >= Fd:
            a = F.silu(F.linear(h, self.w.rows(p + "gate_proj.weight"))) * F.linear(
                h, self.w.rows(p + "up_proj.weight")
            )
            if ffn is not None:
                a = a * ffn.to(a.dtype)
        else:
            a = h.new_empty((*h.shape[:-1], Fd))
            for f0 in range(0, Fd, units):
                f1 = min(Fd, f0 + units)
                gv = F.linear(h, self.w.rows(p + "gate_proj.weight", f0, f1))
                blk = F.silu(gv) * F.linear(h, self.w.rows(p + "up_proj.weight", f0, f1))
                a[..., f0:f1] = blk if ffn is None else blk * ffn[f0:f1].to(blk.dtype)
        y = self.linear(a, p + "down_proj.weight")
        if self.m is not None:
            y = y * (self.m["hidden"] * self.m["layers"][l]["residual"]).to(y.dtype)
        return x + y

    def check_finite(self, l: int, half: str, x: torch.Tensor) -> None:
        if bool(torch.isfinite(x).all()):
            return
        H = self.cfg.hidden_size
        bad = int((~torch.isfinite(x)).flatten().nonzero()[0])
        raise PassError(
            f"{self.dir}: the hidden state becomes non-finite in layer {l} (its {half} half, model.layers.{l}.{half}.*): "
            f"token {bad // H}, dimension {bad % H} (hidden_states[{l + 1}]); the activations overflowed {self.dt} in this half"
        )

    def run(
        self,
        ids: torch.Tensor,
        *,
        on_layer: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        keep_hidden: bool = False,
        logits: bool = True,
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(logits f32 [B,T,V] or None, hidden states as HF when keep_hidden)."""
        c = self.cfg
        B, T = ids.shape
        if int(ids.min()) < 0 or int(ids.max()) >= c.vocab_size:
            raise PassError(f"input id {int(ids.max())} is outside the vocabulary [0, {c.vocab_size}) of {self.dir}")
        self.total = c.num_layers * self.layer_bytes + (4 * c.vocab_size * c.hidden_size if logits else 0)
        self.done = 0
        cos, sin, allowed = self.rope(T)
        x = self.embed(ids.to(self.dev))
        hidden = [x.float().cpu()] if keep_hidden else []
        with torch.no_grad():
            for l in range(c.num_layers):
                x_in = x
                start = self.done
                mid = self.attention(l, x, cos, sin, allowed)
                self.check_finite(l, "self_attn", mid)
                x = self.mlp(l, mid)
                self.check_finite(l, "mlp", x)
                self.done = start
                self.tick(self.layer_bytes)
                if on_layer is not None:
                    on_layer(l, x_in, x)
                if keep_hidden and l < c.num_layers - 1:
                    hidden.append(x.float().cpu())
            if not logits:
                return None, hidden
            normed = self.norm(x, self.w.rows("model.norm.weight"))
            if keep_hidden:
                hidden.append(normed.float().cpu())
            head = "lm_head.weight" if not c.tie_word_embeddings else "model.embed_tokens.weight"
            V, Hd = self.w.shape(head)
            rows = max(1, min(V, 4096, self.band_rows(Hd)))
            out = torch.empty((B, T, V), dtype=torch.float32)
            for v0 in range(0, V, rows):
                v1 = min(V, v0 + rows)
                z = F.linear(normed, self.w.rows(head, v0, v1)).float()
                if c.logit_scale != 1:
                    z = z * c.logit_scale
                if self.m is not None:
                    z = z + self.m["vocab_bias"][v0:v1]
                out[..., v0:v1] = z.cpu()
                self.tick(4 * (v1 - v0) * Hd)
        bad = torch.isnan(out) | (out == float("inf"))
        if self.m is None:
            bad |= out == float("-inf")
        if bool(bad.any()):
            i = int(bad.flatten().nonzero()[0])
            raise PassError(
                f"{self.dir}: logits are non-finite at position {i // c.vocab_size}, token {i % c.vocab_size}: the activations overflowed"
            )
        return out, hidden


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def layer_distance(x_in: torch.Tensor, x_out: torch.Tensor, metric: str) -> float:
    """src/growth/distance.ts layerDistance, token-averaged, sums in f64 (a cosine distance near 0
    is 1 - dot/den: f32 sums would lose the digits that rank the layers)."""
    H = x_in.shape[-1]
    a = x_in.reshape(-1, H).double()
    b = x_out.reshape(-1, H).double()
    dot, n_in, n_out = (a * b).sum(-1), (a * a).sum(-1), (b * b).sum(-1)
    n_diff = ((b - a) ** 2).sum(-1)
    same = n_diff == 0
    if metric == "cosine":
        den = torch.sqrt(n_in * n_out)
        d = torch.where(den == 0, torch.ones_like(den), torch.clamp(1 - dot / torch.where(den == 0, 1.0, den), min=0))
    else:
        d = torch.where(
            n_in == 0, torch.full_like(n_in, math.inf), torch.sqrt(n_diff / torch.where(n_in == 0, 1.0, n_in))
        )
    d = torch.where(same, torch.zeros_like(d), d)
    return float(d.sum() / a.shape[0]) if a.shape[0] > 0 else 0.0


# ---- the command line -------------------------------------------------------------------------


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PassError("--device cuda: torch sees no CUDA GPU")
    return name


def _read_ids(path: str) -> torch.Tensor:
    try:
        t, _ = load_file(path)
    except Exception as e:
        raise PassError(f"{path}: cannot read input ids: {e}") from None
    if "input_ids" not in t or t["input_ids"].dim() != 2:
        raise PassError(f"{path}: needs a tensor input_ids of rank 2 [batch, seq]")
    return t["input_ids"].long()


def run_job(job: dict[str, Any], index: int = 0, quiet: bool = False) -> dict[str, Any]:
    """One pass: {"verb": "forward"|"distances", "checkpoint", "input", "output"?, "hidden"?,
    "metric"?, "masks"?, "device"?, "dtype"?, "maxBlockBytes"?} -> its result."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if quiet or (now - last[0] < 0.2 and done < total):
            return
        last[0] = now
        print(f"{PROGRESS} {index} {done} {total}", file=sys.stderr, flush=True)

    verb = job.get("verb")
    missing = [k for k in ("checkpoint", "input") if not isinstance(job.get(k), str)]
    if missing:
        raise PassError(f"job {index}: no {' or '.join(missing)} given")
    if verb not in ("forward", "distances"):
        raise PassError(f"job {index}: verb {verb!r} is not forward or distances")
    ps = Pass(
        job["checkpoint"],
        masks=job.get("masks", True),
        device=_device(job.get("device") or os.environ.get("FLM_GROW_TORCH_DEVICE", "auto")),
        dtype=job.get("dtype") or os.environ.get("FLM_GROW_TORCH_DTYPE", "f32"),
        max_block_bytes=int(job.get("maxBlockBytes") or DEFAULT_MAX_BLOCK_BYTES),
        on_bytes=progress,
    )
    ids = _read_ids(job["input"])
    t0 = time.monotonic()
    if verb == "distances":
        metric = job.get("metric", "cosine")
        if metric not in ("cosine", "l2"):
            raise PassError(f"metric {metric!r} is not cosine or l2")
        dist: list[float] = []
        ps.run(ids, on_layer=lambda _l, xi, xo: dist.append(layer_distance(xi, xo, metric)), logits=False)
        # JSON has no Infinity/NaN: null, which the caller reports as a non-finite distance
        result: dict[str, Any] = {"distances": [d if math.isfinite(d) else None for d in dist]}
    else:
        if not job.get("output"):
            raise PassError("forward: an output file is required")
        logits, hidden = ps.run(ids, keep_hidden=bool(job.get("hidden")))
        assert logits is not None
        out = {"logits": logits.contiguous()}
        for i, x in enumerate(hidden):
            out[f"hidden_states.{i}"] = x.contiguous()
        meta = {"format": "pt", "producer": "flm_grow_torch.passes", "masked": str(ps.m is not None).lower()}
        save_file(job["output"], out, meta)
        result = {"output": job["output"]}
    result.update(
        masked=ps.m is not None,
        batch=int(ids.shape[0]),
        seqLen=int(ids.shape[1]),
        device=str(ps.dev),
        dtype=ps.dt.__repr__().replace("torch.", ""),
        threads=torch.get_num_threads(),
        seconds=time.monotonic() - t0,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m flm_grow_torch.passes",
        description="forward/distances on one checkpoint, or `batch jobs.json` (a JSON list of jobs, one torch import)",
    )
    p.add_argument("verb", choices=["forward", "distances", "batch"])
    p.add_argument("checkpoint", help="checkpoint folder (batch: the jobs JSON file)")
    p.add_argument("--input", help="safetensors with input_ids [B, T] (I64 or I32)")
    p.add_argument("--output", help="forward: safetensors to write")
    p.add_argument("--hidden", action="store_true", help="forward: also hidden_states.N")
    p.add_argument("--metric", choices=["cosine", "l2"], default="cosine")
    p.add_argument("--no-masks", action="store_true")
    # defaults from the environment: the flm-grow commands pass no device or dtype of their own
    p.add_argument(
        "--device", help="cpu, cuda or auto (cuda when torch sees a GPU); default $FLM_GROW_TORCH_DEVICE or auto"
    )
    p.add_argument(
        "--dtype",
        choices=["f32", "bf16"],
        help="compute dtype (distances sum in f64); default $FLM_GROW_TORCH_DTYPE or f32",
    )
    p.add_argument("--max-block-bytes", type=int, default=DEFAULT_MAX_BLOCK_BYTES)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        torch.set_num_threads(a.threads if a.threads > 0 else (os.cpu_count() or 1))
        if a.verb == "batch":
            try:
                with open(a.checkpoint) as f:
                    jobs = json.load(f)
            except (OSError, ValueError) as e:
                raise PassError(f"{a.checkpoint}: cannot read the jobs: {e}") from None
            if not isinstance(jobs, list):
                raise PassError(f"{a.checkpoint}: expected a JSON list of jobs")
        else:
            if a.input is None:
                raise PassError(f"{a.verb}: --input is required")
            jobs = [
                {
                    "verb": a.verb,
                    "checkpoint": a.checkpoint,
                    "input": a.input,
                    "output": a.output,
                    "hidden": a.hidden,
                    "metric": a.metric,
                    "masks": not a.no_masks,
                    "device": a.device,
                    "dtype": a.dtype,
                    "maxBlockBytes": a.max_block_bytes,
                }
            ]
        results = [run_job(j, i, a.quiet) for i, j in enumerate(jobs)]
        print(f"{RESULT} {json.dumps(results[0] if a.verb != 'batch' else {'results': results})}", flush=True)
        return 0
    except (PassError, OSError) as e:
        print(f"flm_grow_torch.passes: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
