"""How much memory a training step of the torch engine needs, checked before the model loads, so
that a model too large for the machine is refused in one line naming the fix instead of dying
minutes later in the allocator or at the hands of Linux's out-of-memory killer.

Calibrated, not derived: one step (batch 1 x 16, f32, AdamW) of Llama-3.2-1B's shape at 2, 6, 9,
12 and 14 layers (0.38-1.11 B parameters) peaked at 8.34 / 12.16 / 15.02 / 17.88 / 19.79 GB RSS on
CPU, a line of 2.3 GB + 15.7 B per parameter (README, "Largest model"). Its parts: 16 B of f32
weights, gradients and the two AdamW moments per parameter (32 in f64); the runtime (0.26 GB: a
step of the 242 K-parameter fixture); and two vocab x hidden f32 temporaries of the LM head's
backward pass (2.1 GB of the 2.3 for that 128256 x 2048 head). This sum is within 3 % of the five
measurements, above them. Activations come on top and grow with the batch: what autograd keeps per
token and layer (the normed inputs, q/k/v, the attention probabilities, the MLP's gate/up/product)
and the logits with their softmax and gradient.

Distributed layouts (DDP, FSDP2, TP, FSDP x TP on 2-4 processes) are calibrated on `npm run bench
-- distributed` at 104-399 M parameters (docs/scaling.md): DDP adds its gradient buckets, FSDP2 the
unit that runs (gathered) and its gradient; TP and FSDP x TP terms are measured, not broken down.
Each layout's estimate is 0-6 % above the measured per-rank peaks (test/torch/memory.test.ts).
"""

import os

RUNTIME_BYTES = 0.3e9
# measured above the rest (npm run bench -- distributed, 0.1-0.4 B parameters; not broken down
# further): under TP 0.05-0.1 GB per process; under FSDP x TP a further 1.4 B per parameter of the
# whole model, divided over the ranks like the state (its peaks grew 5.19 B per parameter per rank
# against the 4.86 of the rest of the estimate)
TP_EXTRA_BYTES, FSDP_TP_EXTRA_PER_PARAMETER = 0.1e9, 1.4
# An environment override of the memory the machine offers (bytes): containers whose cgroup limit is
# not visible, or a deliberate cap. The same variable as flm-grow's own (src/util/limits.ts).
MEMORY_LIMIT_ENV = "FLM_GROW_MEMORY_LIMIT"


def parameter_count(cfg):
    H, F, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    layer = H * q + 2 * H * kv + q * H + 3 * H * F + 2 * H
    if cfg.qkv_bias:
        layer += q + 2 * kv
    if cfg.qk_norm:
        layer += 2 * cfg.head_dim
    return V * H * (1 if cfg.tie_word_embeddings else 2) + L * layer + H


def train_step_bytes(cfg, tokens, seq_len, state_bytes_per_param, shards, tp, activation_checkpointing, ddp=False):
    """Peak bytes of one process: the runtime, the parameter state (divided over `shards` FSDP
    ranks and `tp` tensor-parallel ranks), DDP's gradient buckets (`ddp`: a second copy of the f32
    gradients, 4 B per parameter), the LM head's backward temporaries (its weight is split along
    the vocabulary under TP) and the activations of `tokens` tokens (this process's share of the
    batch). Under TP the per-head and per-FFN-unit activations and the logits (left sharded along
    the vocabulary: loss_parallel) are split; the hidden-size ones are not. With activation
    checkpointing a layer keeps only its input (H values per token) and one layer at a time is
    recomputed in full.

    The load path adds nothing: under FSDP2/TP every rank reads only its own block of each weight
    and AdamW moment (parallel.Layout.fill), and a save gathers and writes one tensor at a time
    (safetensors_io.save_file_streamed), so neither holds more than the largest tensor beside the
    state. Checked against `npm run bench -- distributed` (docs/scaling.md)."""
    H, F, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    per_token_layer = (6 * H + (4 * H + 6 * F + 3 * cfg.num_heads * seq_len) / tp) * 4
    logits = 3 * V * 4 / tp
    if activation_checkpointing:
        activations = tokens * (L * H * 4 + per_token_layer + logits)
    else:
        activations = tokens * (L * per_token_layer + logits)
    head_temporaries = 2 * V * H * 4 / tp
    state = state_bytes_per_param + (4 if ddp else 0)
    working = 0.0
    if shards > 1:
        # FSDP2: the unit that runs is gathered whole (its TP part) and its gradient is whole until
        # the reduce-scatter; the largest unit is the embedding or the head (V x H) or a layer
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        layer = 2 * H * q + 2 * H * kv + 3 * H * F
        working = 2 * max(V * H, layer) * 4 / tp
        if tp > 1:
            working += FSDP_TP_EXTRA_PER_PARAMETER * parameter_count(cfg) / (shards * tp)
    if tp > 1:
        working += TP_EXTRA_BYTES
    return RUNTIME_BYTES + state * parameter_count(cfg) / (shards * tp) + head_temporaries + activations + working


# glibc's mallopt parameter M_MMAP_THRESHOLD, and the value set: blocks of 4 MiB and more (weights,
# gradients, moments, gathered FSDP units) are mapped on their own and given back when freed
M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES = -3, 4 << 20


def return_freed_memory() -> bool:
    """Have glibc give large freed blocks back to the system (a fixed M_MMAP_THRESHOLD of 4 MiB).
    By default glibc raises the threshold to the size of each mapped block freed, up to 32 MiB,
    after which blocks of that size come from the heap, which does not shrink: measured on an
    87.8 M-parameter model under FSDP2 2 on CPU, each rank then kept ~0.2 GB more after the first
    step (1.29 GB against 1.08) and peaked that much higher. A user's MALLOC_MMAP_THRESHOLD_ wins.
    True when set (Linux with glibc)."""
    import ctypes
    import platform

    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def available_cpu_bytes():
    """(bytes, where from): FLM_GROW_MEMORY_LIMIT, else the smaller of MemAvailable and the cgroup's
    room (memory.max - memory.current), whichever the machine shows."""
    env = os.environ.get(MEMORY_LIMIT_ENV, "")
    if env:
        try:
            v = float(env)
            if v > 0:
                return v, f"${MEMORY_LIMIT_ENV}"
        except ValueError:
            pass
    best, src = None, None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    best, src = int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                room = int(limit) - int(f.read().strip())
            if best is None or room < best:
                best, src = room, "the cgroup's memory.max"
    except (OSError, ValueError):
        pass
    return best, src


def check_fits(cfg, tokens, seq_len, device, f64, fsdp_world, local_processes, tp, activation_checkpointing, ddp=False):
    """None when the step fits, else the one-line reason with the fixes. On CPU every process on
    this machine needs its own share (a per-rank estimate times the local processes)."""
    import torch

    need = train_step_bytes(cfg, tokens, seq_len, 32 if f64 else 16, fsdp_world, tp, activation_checkpointing, ddp)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        have, where, procs = float(free), f"free on {device}", 1
    else:
        have, where = available_cpu_bytes()
        procs = local_processes
        if have is None:
            return None  # nothing to compare with: let the allocator decide
    if need * procs <= have:
        return None
    gb = lambda b: f"{b / 1e9:.1f} GB"
    who = f"{procs} processes x {gb(need)} (per rank)" if procs > 1 else gb(need)
    return (
        f"the model ({parameter_count(cfg) / 1e9:.2f} B parameters) needs about {who} to train "
        f"({32 if f64 else 16} B per parameter for weights, gradients and AdamW moments, the LM head's "
        f"backward temporaries, activations for {tokens} tokens per step), and {gb(have)} is available ({where}). "
        f"Use a smaller --batch-size or --seq-len, a machine with more memory, or more processes or nodes "
        f"(--nproc N --fsdp, --tp K, --nnodes M), or --activation-checkpointing; "
        f"${MEMORY_LIMIT_ENV}=<bytes> overrides the available figure"
    )
