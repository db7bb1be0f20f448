"""python -m flm_grow_torch.train <checkpoint> --data ... --out ...

The torch engine of `flm-grow train`: same flags, same meaning, same results. AdamW, LR
schedules, clipping, mask annealing, deterministic batches, metrics.jsonl and checkpoints follow
src/train/trainer.ts step for step, so a run can switch engines at any checkpoint.

Distributed: under torchrun every rank takes an equal slice of the same global batch
(DDP averages gradients, so the update equals the one-process update); gloo on CPU, nccl on
GPU. On GPU the forward/backward runs under bf16 autocast by default (--precision); weights,
moments and the update stay f32. --precision f64 computes everything in float64: a numerical
reference for the f32 runs (docs/engines.md), never the default.
"""

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime, timezone

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import runlock
from .checkpointing import (
    MANIFEST_FORMAT,
    ManifestError,
    MetricsLog,
    checkpoint_dir_name,
    latest_checkpoint,
    prune_checkpoints,
    read_manifest,
    read_side_files,
    sha256_file,
    source_identity,
    write_manifest_last,
    write_side_files,
)
from .config import read_config
from .data import TokenDataset
from .fsdp import FsdpUpdater, fsdp_unavailable
from .hf_remote import train_card, write_model_files
from .masks import MASKS_FILE, all_one, annealing_end_step, attach_masks, read_masks, values_at, write_masks
from .memory import check_fits
from .model import DecoderLayer, at_least_f32, load_model
from .optim import OPTIMIZER_FILE, AdamW, js_value, lr_at, read_optimizer_meta
from .options import add_train_arguments, check_train_arguments
from .safetensors_io import save_checkpoint_tensors

METRICS_FILE = "metrics.jsonl"
PRECISIONS = ["auto", "f32", "bf16", "f64"]
# the --precision default, so that runs started through `flm-grow train --engine torch` or a
# pipeline (which pass no --precision) can be made f64 reference runs (docs/engines.md)
PRECISION_ENV = "FLM_GROW_TORCH_PRECISION"
MAX_LOSS = 100  # trainer.ts MAX_LOSS: a loss above it stops training


def tool_version():
    # the repository's package.json when run from a checkout (the version flm-grow reports)
    p = os.path.join(os.path.dirname(__file__), "..", "..", "package.json")
    try:
        with open(p) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return "0.1.0"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m flm_grow_torch.train", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    add_train_arguments(p)  # every declared option (_data/train_options.json)
    p.add_argument("--stage", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="auto: bf16 autocast on GPU, f32 on CPU; f64: weights, moments, masks and arithmetic in float64, "
        "a numerical reference for f32 runs (checkpoints are still written in f32). "
        f"Default: ${PRECISION_ENV} or auto",
    )
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads per process (default: CPUs / processes)"
    )
    p.add_argument("--interrupt-after", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.precision is None:
        a.precision = os.environ.get(PRECISION_ENV) or "auto"
        if a.precision not in PRECISIONS:
            p.error(f"${PRECISION_ENV} is {a.precision!r}; expected one of {', '.join(PRECISIONS)}")
    return a


class Dist:
    """Rank, world size and the collectives used; a single process is world size 1."""

    def __init__(self, device_kind):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")

    def mean(self, x):
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]) / self.world

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


def reference_blas():
    """The netlib reference BLAS when this process multiplies with it (Debian's torch links
    libblas.so.3, which is the reference one unless OpenBLAS/BLIS is installed: ~1 GFLOP/s
    against ~15-20 per core measured with libopenblas0-openmp on this 2-core machine), else None."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return None
    optimised = ("openblas", "blis", "mkl", "atlas")
    if any(k in x for x in libs for k in optimised):
        return None
    ref = [x for x in libs if os.path.basename(x).startswith("libblas.so")]
    return ref[0] if ref else None


def default_threads(dd):
    """This machine's CPUs shared out over the processes on it. torch's own default can be far
    lower (Debian's torch 1.13 starts with one thread on a 2-core machine)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(dd.world)))
    return max(1, cpus // max(1, local))


def start_state(a, dir_, resumed):
    """Where this run starts: global step, stage start, tokens, LR schedule (trainer.ts startState)."""
    m = read_manifest(dir_)
    lr = a.lr
    base = {
        "lr": lr,
        "minLr": a.min_lr if a.min_lr is not None else lr / 10,
        "warmupSteps": a.warmup_steps,
        "schedule": a.schedule,
    }
    if resumed:
        x = m.get("extra", {})
        # the run's target is its first step + --steps (older manifests: the stored target)
        run_start = x.get("runStartStep")
        return dict(
            step=x["step"],
            stageStart=x["stageStart"],
            tokens=x["tokens"],
            runStart=run_start if run_start is not None else x["targetStep"] - a.steps,
            targetStep=run_start + a.steps if run_start is not None else x["targetStep"],
            lrSchedule=x["lrSchedule"],
            schedule=(m.get("masks") or {}).get("schedule", []),
            source=m.get("source"),
            grownFrom=None,
        )
    step = tokens = stage_start = 0
    opt = os.path.join(dir_, OPTIMIZER_FILE)
    if m is not None and m.get("kind") == "train":
        step, tokens, stage_start = m["extra"]["step"], m["extra"]["tokens"], m["extra"]["stageStart"]
    elif os.path.exists(opt):
        meta = read_optimizer_meta(opt)
        step, tokens = meta["step"], meta["tokens"]
        stage_start = step  # a grown checkpoint: its stage starts here
    target = step + a.steps
    total = (
        max(a.total_steps if a.total_steps is not None else target, target)
        if a.lr_after_growth == "continue"
        else a.steps
    )
    ls = dict(
        base,
        warmupSteps=min(base["warmupSteps"], total),
        totalSteps=total,
        startStep=0 if a.lr_after_growth == "continue" else step,
    )
    if m is not None and m.get("kind") == "train" and m.get("source") is not None:
        source = m["source"]
    else:
        source = None  # filled in by the caller (needs the tensor sizes)
    return dict(
        step=step,
        stageStart=stage_start,
        tokens=tokens,
        runStart=step,
        targetStep=target,
        lrSchedule=ls,
        schedule=(m or {}).get("masks", {}).get("schedule", []) if m else [],
        source=source,
        grownFrom=m if m is not None and m.get("kind") == "grow" else None,
    )


def refuse_padding_ids(ds, masks):
    """Data using an id whose vocab mask is 0 for good (padding, not a new token) cannot train:
    the model never predicts it (src/train/data.ts checkMaskedIds)."""
    tokens = masks.get("vocab_tokens")
    dead = (masks["vocab"] == 0) if tokens is None else (masks["vocab"] == 0) & (tokens != 1)
    if not bool(dead.any()):
        return
    step = 1 << 24
    for start in range(0, len(ds.tokens), step):
        ids = torch.frombuffer(
            bytearray(ds.tokens[start : start + step].tobytes()),
            dtype={1: torch.uint8, 2: torch.int16, 4: torch.int32}[ds.tokens.itemsize],
        ).long()
        if ds.tokens.itemsize == 2:
            ids = ids & 0xFFFF
        hit = dead[ids].nonzero()
        if hit.numel() > 0:
            at = start + int(hit[0])
            sys.exit(
                f"train: {ds.source}: token id {int(ids[int(hit[0])])} at position {at} is a padding id of the checkpoint "
                "(its vocab mask is 0 for good: the model can never predict it); re-tokenize the data for the source "
                "vocabulary, or grow the source with learnable new ids: --vocab-new tokens"
            )


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    bad = check_train_arguments(a)
    if bad is not None:
        sys.exit(f"train: {bad}")
    device_kind = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.fsdp:
        why = fsdp_unavailable(torch.device(device_kind))
        if why is not None:
            sys.exit(f"train: {why}")
    dd = Dist(device_kind)
    device = torch.device(f"cuda:{dd.local_rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(a.threads or default_threads(dd))
    B, T, seed, clip = a.batch_size, a.seq_len, a.seed, a.clip_grad
    if B % dd.world:
        sys.exit(f"train: --batch-size {B} must be a multiple of the number of processes ({dd.world})")
    bf16 = a.precision == "bf16" or (a.precision == "auto" and device.type == "cuda")
    f64 = a.precision == "f64"
    if f64 and a.fsdp:
        sys.exit("train: --precision f64 is a single-process/DDP reference mode; --fsdp keeps f32 shards")
    compute_dtype = torch.float64 if f64 else torch.float32
    precision_label = "bf16-autocast" if bf16 else "f64" if f64 else "f32"
    log = (lambda s: None) if a.quiet or dd.rank else (lambda s: print(s, flush=True))
    slow_blas = reference_blas() if device.type == "cpu" and dd.rank == 0 else None
    if slow_blas is not None:
        print(
            f"train: warning: torch multiplies with the reference BLAS ({slow_blas}), about 1 GFLOP/s; "
            "install an optimised one (Debian/Ubuntu: apt-get install libopenblas0-openmp)",
            file=sys.stderr,
            flush=True,
        )
    if dd.rank == 0:  # one writer per run folder (runlock.py); rank 0 writes for the job
        try:
            runlock.acquire(a.out, take_over=a.take_over_lock, log=log)
        except runlock.RunLockError as e:
            sys.exit(f"train: {e}")
    dir_, resumed = a.checkpoint, False
    if a.resume:
        latest = latest_checkpoint(a.out, warn=lambda line: log(f"train: warning: --resume {line}"))
        if latest is not None:
            dir_, resumed = latest, True
    cfg = read_config(dir_)
    read_manifest(dir_, cfg.num_layers)  # every field that drives computation, checked first (ManifestError)
    if T > cfg.max_position_embeddings:
        sys.exit(
            f"train: --seq-len {T} exceeds the model's max_position_embeddings {cfg.max_position_embeddings} ({dir_}/config.json)"
        )
    # before anything is allocated or written: a model this machine cannot train is refused here
    too_big = check_fits(
        cfg,
        B // dd.world * T,
        T,
        device,
        f64=f64,
        fsdp_world=dd.world if a.fsdp else 1,
        local_processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )
    if too_big is not None:
        sys.exit(f"train: {dir_}: {too_big}")
    os.makedirs(a.out, exist_ok=True)
    st = start_state(a, dir_, resumed)
    if os.path.exists(os.path.join(dir_, "tokenizer.json")) and os.path.splitext(a.data)[1].lower() not in (
        ".bin",
        ".u16",
        ".u32",
    ):
        sys.exit(
            f"train: {dir_} has a tokenizer.json and {a.data} is text; the torch engine reads byte-level text or token files. "
            "Run through `flm-grow train --engine torch`, which tokenizes it first, or pass a .u16/.u32 token file."
        )
    ds = TokenDataset(a.data, eval_fraction=a.eval_fraction, seq_len=T)
    if ds.max_id >= cfg.vocab_size:
        sys.exit(f"train: {a.data}: token id {ds.max_id} is outside the model's vocabulary of {cfg.vocab_size}")
    data_sha = sha256_file(a.data)
    side_files = read_side_files(dir_)

    model = load_model(dir_, dtype=compute_dtype, device=device)
    names = [n for n, _ in model.named_parameters()]
    params = sum(p.numel() for p in model.parameters())
    if st["source"] is None:
        st["source"] = source_identity(dir_, (params, _stored_bytes(dir_)))
    masks_path = os.path.join(dir_, MASKS_FILE)
    handle = None
    if os.path.exists(masks_path):
        # a large finite bias on ids with vocab mask 0: softmax weight 0 as with -inf, but no NaN in the loss
        handle = attach_masks(model, read_masks(masks_path, cfg), st["schedule"], vocab_fill=-1e30, dtype=compute_dtype)
        refuse_padding_ids(ds, handle.base)
    if device.type == "cuda":
        model.set_sdpa(True)
    opt_path = os.path.join(dir_, OPTIMIZER_FILE)
    fsdp = None
    if a.fsdp:
        fsdp = FsdpUpdater(model, device, DecoderLayer, beta1=a.beta1, beta2=a.beta2, weight_decay=a.weight_decay)
        adam = fsdp
    else:
        adam = AdamW(model.named_parameters(), beta1=a.beta1, beta2=a.beta2, weight_decay=a.weight_decay)
    if os.path.exists(opt_path):
        adam.load(opt_path)
    else:
        adam.step = st["step"]
    net = model
    if fsdp is not None:
        net = fsdp.net
    elif dd.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    metrics = None
    stage = a.stage if a.stage is not None else 0
    if isinstance(stage, str) and stage.isdigit():
        stage = int(stage)
    if dd.rank == 0:
        # training from one of the run folder's own checkpoints continues that run: keep its metrics
        ck, out_dir = os.path.realpath(a.checkpoint), os.path.realpath(a.out)
        continues = resumed or (ck != out_dir and ck.startswith(out_dir + os.sep))
        metrics = MetricsLog(
            os.path.join(a.out, METRICS_FILE), resume_at_step=st["step"] if continues else None, truncate=not continues
        )
        g = st["grownFrom"]
        if g is not None:
            rt = (g.get("plan") or {}).get("resolvedTargets")
            metrics.log_growth(
                st["step"],
                stage,
                None
                if rt is None
                else f"grown to H {rt['hidden_size']}, F {rt['intermediate_size']}, heads {rt['num_attention_heads']}, L {rt['num_hidden_layers']}",
            )
    anneal_end = st["stageStart"] + annealing_end_step(st["schedule"])
    has_eval = len(ds.eval) > T
    lo, hi = dd.rank * B // dd.world, (dd.rank + 1) * B // dd.world

    def set_masks(step):
        if handle is not None:
            handle.set_step(step - st["stageStart"])

    def loss_of(inputs, targets):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(inputs[lo:hi].to(device))
        flat = targets[lo:hi].to(device).reshape(-1)
        logits = at_least_f32(logits)
        if handle is None:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat)
        # targets whose vocab mask is 0 (a new token before annealing starts) are left out of the
        # mean, as src/train/trainer.ts crossEntropy does: predicting them would cost ~1e30
        per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, reduction="none")
        live = (handle.current["vocab"][flat] > 0).to(per.dtype)
        return (per * live).sum() / live.sum().clamp(min=1)

    def eval_loss():
        total = 0.0
        with torch.no_grad():
            for k in range(a.eval_batches):
                total += dd.mean(float(loss_of(*ds.batch_at("eval", k, B, T, seed))))
        return total / a.eval_batches

    step, tokens = st["step"], st["tokens"]
    last_saved = dir_ if resumed else None
    losses, last_eval = [], None
    t0, trained = time.time(), 0

    def save(complete):
        nonlocal last_saved
        out = os.path.join(a.out, checkpoint_dir_name(step))
        set_masks(step)
        if fsdp is not None:
            weights, moments = fsdp.full_state()  # a collective: every rank takes part
        else:
            weights, moments = {n: p.detach().float().cpu() for n, p in model.named_parameters()}, None
        if dd.rank == 0:
            tmp = out + f".tmp-{os.getpid()}"
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            save_checkpoint_tensors(tmp, {n: weights[n].detach().float().cpu() for n in names})
            cur = handle.mask_set() if handle is not None else None
            if cur is not None:
                write_masks(os.path.join(tmp, MASKS_FILE), cur)
            if fsdp is not None:
                fsdp.save(os.path.join(tmp, OPTIMIZER_FILE), weights, moments, tokens)
            else:
                adam.save(os.path.join(tmp, OPTIMIZER_FILE), names, tokens)
            write_side_files(side_files, tmp)
            manifest = {
                "format": MANIFEST_FORMAT,
                "kind": "train",
                "created": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                "tool": {"name": "flm-grow", "version": tool_version()},
            }
            if st["source"] is not None:
                manifest["source"] = st["source"]
            if cur is not None:
                manifest["masks"] = {"file": MASKS_FILE, "schedule": st["schedule"]}
            manifest["extra"] = {
                "step": step,
                "stageStep": step - st["stageStart"],
                "stageStart": st["stageStart"],
                "tokens": tokens,
                "runStartStep": st["runStart"],
                "targetStep": st["targetStep"],
                "complete": complete,
                "seed": seed,
                "dtype": "F32",
                "lrSchedule": st["lrSchedule"],
                "batchSize": B,
                "seqLen": T,
                "data": {
                    "path": os.path.abspath(a.data),
                    "sha256": data_sha,
                    "tokens": len(ds.tokens),
                    "tokenizer": "bytes" if ds.tokenizer else a.data,
                },
                "masksAllOne": cur is None or all_one(cur),
                "lastLoss": losses[-1] if losses else None,
                "evalLoss": last_eval,
                "engine": "torch",
                "processes": dd.world,
                "sharding": "fsdp" if fsdp is not None else "ddp" if dd.world > 1 else "none",
                "precision": precision_label,
            }
            # config.json (masked form while masks are below 1, with its modeling files) and the
            # model card, as src/train/checkpointing.ts writes them (hf_remote/)
            write_model_files(
                tmp,
                js_value(cfg.to_json("float32")),
                cur is not None and not all_one(cur),
                train_card(out, cfg, cur, js_value(manifest), tool_version()),
            )
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
            write_manifest_last(out, js_value(manifest))
            prune_checkpoints(a.out, a.keep_checkpoints, out)
        dd.barrier()
        last_saved = out
        return out

    announced = handle is None or all_one(handle.mask_set())
    interrupted = False
    if step >= st["targetStep"]:
        log(f"train: {dir_} is already at step {step} (target {st['targetStep']}); nothing to do")
    while step < st["targetStep"]:
        if a.interrupt_after is not None and step - st["step"] >= a.interrupt_after:
            interrupted = True
            break
        ts = time.time()
        set_masks(step)
        lr = lr_at(step, st["lrSchedule"])
        inputs, targets = ds.batch_at("train", step, B, T, seed)
        if fsdp is not None:
            fsdp.zero_grad()
        else:
            for p in model.parameters():
                p.grad = None
        loss_t = loss_of(inputs, targets)
        loss_t.backward()
        loss = dd.mean(float(loss_t.detach()))
        # grads are already averaged across ranks by DDP: the norm is the same on every rank
        if fsdp is not None:
            gnorm = fsdp.grad_norm_and_clip(clip)  # across shards; already clipped
        else:
            gnorm = float(
                torch.stack([at_least_f32(p.grad).norm() for p in model.parameters() if p.grad is not None]).norm()
            )
        if not (math.isfinite(loss) and math.isfinite(gnorm)) or loss > MAX_LOSS:
            what = (
                "loss is " + str(loss)
                if not math.isfinite(loss)
                else f"loss {loss:.3e} is above {MAX_LOSS}"
                if loss > MAX_LOSS
                else "gradient norm is " + str(gnorm)
            )
            sys.exit(
                f"train: {a.out}: step {step}: {what} "
                f"(lr {lr:.3e}); training stopped. Last good checkpoint: {last_saved or dir_ + ' (nothing saved in this run)'}. Lower --lr or check the data."
            )
        scale = clip / (gnorm + 1e-6) if clip > 0 and gnorm > clip else 1.0
        if fsdp is not None:
            fsdp.apply(lr)
        else:
            adam.apply(lr, scale)
        losses.append(loss)
        step += 1
        tokens += B * T
        trained += B * T
        eval_now = has_eval and ((a.eval_every > 0 and step % a.eval_every == 0) or step == st["targetStep"])
        if eval_now:
            last_eval = eval_loss()
        m = {"step": step, "tokens": tokens, "loss": loss}  # HF global_step: updates done (metrics.ts)
        if eval_now:
            m["evalLoss"] = last_eval
        m.update(lr=lr, gradNorm=gnorm, tokensPerSec=(B * T) / max(1e-3, time.time() - ts), stage=stage)
        if handle is not None:
            v = values_at(st["schedule"], step - 1 - st["stageStart"])
            if v:
                m["masks"] = v
        if metrics is not None:
            metrics.log_step(js_value(m))
        if not a.quiet and dd.rank == 0 and a.log_every > 0 and (step % a.log_every == 0 or step == st["targetStep"]):
            log(
                f"step {step}/{st['targetStep']}: loss {loss:.4f} lr {lr:.3e} grad-norm {gnorm:.3f}"
            )  # trainer.ts stepLine
        if not announced and step >= anneal_end and all_one(handle.mask_set()):
            announced = True
            log(
                f"train: every mask reached 1 at step {step}; the checkpoint saved from here on can be baked (flm-grow bake <checkpoint> <dest>)"
            )
        if a.save_every > 0 and step % a.save_every == 0 and step < st["targetStep"]:
            save(False)
    out = (last_saved or dir_) if interrupted or step == st["step"] else save(True)
    secs = time.time() - t0
    if metrics is not None:
        metrics.close()
    result = {
        "checkpoint": out,
        "startStep": st["step"],
        "step": step,
        "stageStep": step - st["stageStart"],
        "losses": losses,
        "evalLoss": last_eval,
        "parameters": params,
        "tokensPerSec": trained / max(1e-9, secs),
        "interrupted": interrupted,
        "masksAllOne": handle is None or all_one(handle.mask_set()),
        "processes": dd.world,
        "device": str(device),
        "precision": precision_label,
    }
    if dd.rank == 0:
        # one machine-readable line last, for `flm-grow train --engine torch`
        print("FLM_GROW_RESULT " + json.dumps(result), flush=True)
    dd.close()
    return result


def _stored_bytes(d):
    from .safetensors_io import stored_bytes

    return stored_bytes(
        [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors") and f.startswith("model")]
    )


def out_of_memory(e):
    """An allocator failure (MemoryError, or torch's RuntimeError / OutOfMemoryError naming it)."""
    return isinstance(e, MemoryError) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))
    )


def cli():
    try:
        main()
    except ManifestError as e:
        # a hand-edited manifest is bad input: one line naming the file and field, exit 2
        print(f"train: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        # one line instead of a traceback: what ran out and what a step needs
        sys.exit(
            f"train: out of memory ({str(e).strip().splitlines()[-1][:200]}). A training step holds about 16 bytes per "
            "parameter (f32 weights, gradients and AdamW moments; 32 with --precision f64) plus activations and "
            "twice the largest tensor; use a machine with more memory, or several GPUs with --nproc N --fsdp"
        )


if __name__ == "__main__":
    cli()
