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

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

from . import runlock, sharded
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
from .data import MixedDataset, open_training_data, parse_data_mix
from .fsdp import fsdp_unavailable
from .hf_remote import train_card, write_model_files
from .masks import MASKS_FILE, all_one, annealing_end_step, attach_masks, read_masks, values_at, write_masks
from .memory import check_fits, return_freed_memory
from .model import LlamaForCausalLM, at_least_f32, load_model, rope_frequencies
from .optim import OPTIMIZER_FILE, AdamW, js_num, js_value, lr_at, read_optimizer_meta
from .options import add_train_arguments, check_train_arguments, option
from .parallel import Dist, Layout, tp_refusal
from .safetensors_io import save_checkpoint_streamed

METRICS_FILE = "metrics.jsonl"
# the --precision default, so that runs started through `flm-grow train --engine torch` or a
# pipeline (which pass no --precision) can be made f64 reference runs (docs/engines.md)
PRECISION_ENV = "FLM_GROW_TORCH_PRECISION"
KILL_ENV = "FLM_GROW_TEST_KILL"
# test hook: rank 0 SIGKILLs itself once the async save of this step has written its shards, before
# the manifest that makes it count (the crash-during-async-save test); first attempt only
CRASH_IN_SAVE_ENV = "FLM_GROW_TEST_CRASH_IN_ASYNC_SAVE"
# test hook "R:S": in a restarted attempt (torchrun --max-restarts) rank R waits S seconds before it
# joins the process group, so that the other ranks' gloo set-up reads the store before R writes its
# address (test/torch/restarts.test.ts: a store kept from the failed attempt would hand them R's old one)
RESTART_DELAY_ENV = "FLM_GROW_TEST_RESTART_DELAY"
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
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads per process (default: CPUs / processes)"
    )
    p.add_argument("--interrupt-after", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.precision is None:
        a.precision = os.environ.get(PRECISION_ENV) or "auto"
        if a.precision not in option("precision")["choices"]:
            p.error(f"${PRECISION_ENV} is {a.precision!r}; expected one of {', '.join(option('precision')['choices'])}")
    return a


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


@dataclass
class RunState:
    """Where the run stands (trainer.ts TrainState): the global step, the stage it belongs to, the
    LR schedule and mask schedule it follows, and what has been trained and saved so far."""

    step: int
    stage_start: int
    tokens: int
    run_start: int
    target_step: int
    lr_schedule: dict
    schedule: list
    source: dict | None
    grown_from: dict | None
    start_step: int = 0
    losses: list[float] = field(default_factory=list)
    last_eval: float | None = None
    last_saved: str | None = None
    trained_tokens: int = 0
    interrupted: bool = False
    # seconds each save held up training (a synchronous save: all of it; --async-save: waiting for
    # the previous save, copying the state and writing the small files)
    save_seconds: list[float] = field(default_factory=list)


def start_state(a: argparse.Namespace, dir_: str, resumed: bool) -> RunState:
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
        return RunState(
            step=x["step"],
            stage_start=x["stageStart"],
            tokens=x["tokens"],
            run_start=run_start if run_start is not None else x["targetStep"] - a.steps,
            target_step=run_start + a.steps if run_start is not None else x["targetStep"],
            lr_schedule=x["lrSchedule"],
            schedule=(m.get("masks") or {}).get("schedule", []),
            source=m.get("source"),
            grown_from=None,
            start_step=x["step"],
            last_saved=dir_,
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
    return RunState(
        step=step,
        stage_start=stage_start,
        tokens=tokens,
        run_start=step,
        target_step=target,
        lr_schedule=ls,
        schedule=(m or {}).get("masks", {}).get("schedule", []) if m else [],
        source=source,
        grown_from=m if m is not None and m.get("kind") == "grow" else None,
        start_step=step,
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


class Trainer:
    """The torch trainer, in the steps of src/train/trainer.ts: open_run (options, lock, data,
    model, masks, layout, optimizer, metrics) -> train_loop -> train_step (masks, LR, batch,
    forward/backward, loss and norm) -> optimizer_step (clip + AdamW) -> save (a checkpoint
    folder, manifest last). State that changes during the run is in `self.st` (RunState)."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.handle = None  # masks.MaskHandle, when the checkpoint has masks
        self.metrics: MetricsLog | None = None
        # --async-save: the save in flight (its folder, and the job that finishes it), one at a time
        self.pending: tuple[str, Future] | None = None
        self.save_pool: ThreadPoolExecutor | None = None
        self.save_group = None  # the process group of the background saves' collectives

    # ---- open_run -------------------------------------------------------------------------------

    def open_run(self) -> None:
        a = self.a
        bad = check_train_arguments(a)
        if bad is not None:
            sys.exit(f"train: {bad}")
        if a.async_save and not a.sharded_save:
            sys.exit(
                "train: --async-save needs --sharded-save (the background save writes torch.distributed.checkpoint shards)"
            )
        device_kind = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if a.fsdp:
            why = fsdp_unavailable(torch.device(device_kind))
            if why is not None:
                sys.exit(f"train: {why}")
        _test_restart_delay()
        self.dd = dd = Dist.from_env(device_kind)
        self.device = device = torch.device(f"cuda:{dd.local_rank}" if device_kind == "cuda" else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            return_freed_memory()
        torch.set_num_threads(a.threads or default_threads(dd))
        if a.async_save:
            self.save_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flm-grow-async-save")
            if dd.world > 1:
                import torch.distributed as dist

                # DCP's background save runs collectives (planning, the index) while the training
                # thread runs its own: on one group the two streams would interleave differently on
                # different ranks. Its own gloo group keeps them apart (gloo: also on GPU, where
                # async_save needs a CPU backend), as torchtitan does.
                self.save_group = dist.new_group(backend="gloo")
        if a.tp < 1:
            sys.exit("train: --tp must be an integer >= 1")
        self.dp = dp = dd.world // a.tp if dd.world % a.tp == 0 else dd.world
        if a.batch_size % dp:
            sys.exit(
                f"train: --batch-size {a.batch_size} must be a multiple of the number of data-parallel groups ({dp})"
            )
        self.bf16 = a.precision == "bf16" or (a.precision == "auto" and device.type == "cuda")
        self.f64 = a.precision == "f64"
        if self.f64 and (a.fsdp or a.tp > 1):
            sys.exit("train: --precision f64 is a single-process/DDP reference mode; --fsdp and --tp keep f32 shards")
        self.compute_dtype = torch.float64 if self.f64 else torch.float32
        self.precision_label = "bf16-autocast" if self.bf16 else "f64" if self.f64 else "f32"
        self.log = (lambda s: None) if a.quiet or dd.rank else (lambda s: print(s, flush=True))
        self._warn_slow_blas()
        if dd.rank == 0:  # one writer per run folder (runlock.py); rank 0 writes for the job
            try:
                runlock.acquire(a.out, take_over=a.take_over_lock, log=self.log)
            except runlock.RunLockError as e:
                sys.exit(f"train: {e}")
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if restart > 0:
            # torchrun's elastic agent restarted the workers after one failed (--max-restarts): go on
            # from the run's newest complete checkpoint rather than start the run over
            a.resume = True
            self.log(
                f"train: restart {restart} of at most {os.environ.get('TORCHELASTIC_MAX_RESTARTS', '?')} "
                "(torchrun --max-restarts): resuming from the newest complete checkpoint in --out"
            )
        dir_, resumed = a.checkpoint, False
        if a.resume:
            latest = latest_checkpoint(a.out, warn=lambda line: self.log(f"train: warning: --resume {line}"))
            if latest is not None:
                dir_, resumed = latest, True
        self.dir = dir_
        self.cfg = cfg = read_config(dir_)
        read_manifest(dir_, cfg.num_layers)  # every field that drives computation, checked first (ManifestError)
        why = tp_refusal(cfg, a.tp, dd.world, a.fsdp)
        if why is not None:
            sys.exit(f"train: {dir_}: {why}")
        self._check_fits()
        os.makedirs(a.out, exist_ok=True)
        self.st = start_state(a, dir_, resumed)
        self._open_data()
        self.side_files = read_side_files(dir_)
        self._open_model()
        self._open_metrics(resumed)
        self.anneal_end = self.st.stage_start + annealing_end_step(self.st.schedule)
        # this rank's slice of the global batch: ranks of one TP group take the same one
        r = self.layout.dp_rank
        self.lo, self.hi = r * a.batch_size // self.dp, (r + 1) * a.batch_size // self.dp
        del cfg

    def _warn_slow_blas(self) -> None:
        slow_blas = reference_blas() if self.device.type == "cpu" and self.dd.rank == 0 else None
        if slow_blas is not None:
            print(
                f"train: warning: torch multiplies with the reference BLAS ({slow_blas}), about 1 GFLOP/s; "
                "install an optimised one (Debian/Ubuntu: apt-get install libopenblas0-openmp)",
                file=sys.stderr,
                flush=True,
            )

    def _check_fits(self) -> None:
        a, cfg = self.a, self.cfg
        if a.seq_len > cfg.max_position_embeddings:
            sys.exit(
                f"train: --seq-len {a.seq_len} exceeds the model's max_position_embeddings {cfg.max_position_embeddings} ({self.dir}/config.json)"
            )
        # before anything is allocated or written: a model this machine cannot train is refused here
        too_big = check_fits(
            cfg,
            a.batch_size // self.dp * a.seq_len,
            a.seq_len,
            self.device,
            f64=self.f64,
            fsdp_world=self.dd.world // a.tp if a.fsdp else 1,
            tp=a.tp,
            activation_checkpointing=a.activation_checkpointing,
            local_processes=self.dd.local_world,
            ddp=self.dd.world > 1 and not a.fsdp and a.tp == 1,
        )
        if too_big is not None:
            sys.exit(f"train: {self.dir}: {too_big}")

    def _open_data(self) -> None:
        a, dir_ = self.a, self.dir
        mix = parse_data_mix(a.data)
        files = [a.data] if mix is None else [p for p, _ in mix]
        for f in files:
            if os.path.exists(os.path.join(dir_, "tokenizer.json")) and os.path.splitext(f)[1].lower() not in (
                ".bin",
                ".u16",
                ".u32",
            ):
                sys.exit(
                    f"train: {dir_} has a tokenizer.json and {f} is text; the torch engine reads byte-level text or token files. "
                    "Run through `flm-grow train --engine torch`, which tokenizes it first, or pass a .u16/.u32 token file."
                )
        self.ds = open_training_data(a.data, eval_fraction=a.eval_fraction, seq_len=a.seq_len)
        tok = os.path.join(dir_, "tokenizer.json")
        self.tokenizer_name = tok if os.path.exists(tok) else "bytes"
        parts = self.ds.parts if mix is not None else [self.ds]
        for p in parts:
            if p.max_id >= self.cfg.vocab_size:
                sys.exit(
                    f"train: {p.source}: token id {p.max_id} is outside the model's vocabulary of {self.cfg.vocab_size}"
                )
        # a mix: the hash of its parts' hashes and weights, as trainer.ts (JSON.stringify of [[sha, w], ...])
        self.data_sha = (
            sha256_file(a.data)
            if mix is None
            else hashlib.sha256(
                ("[" + ",".join(f'["{sha256_file(p)}",{js_num(w)}]' for p, w in mix) + "]").encode()
            ).hexdigest()
        )
        self.has_eval = len(self.ds.eval) > a.seq_len

    def _open_model(self) -> None:
        a, dir_, st = self.a, self.dir, self.st
        resharding = sharded.is_sharded(dir_)
        # FSDP/TP, or a sharded save: the model is built on the meta device and laid out first, so that
        # each rank allocates only its own parts, then filled one tensor at a time (from the HF files,
        # or by DCP from the shards of whatever layout wrote them). Otherwise the whole model loads.
        on_meta = resharding or a.fsdp or a.tp > 1
        model = meta_model(self.cfg) if on_meta else load_model(dir_, self.compute_dtype, self.device)
        self.names = [n for n, _ in model.named_parameters()]
        self.params = sum(p.numel() for p in model.parameters())
        if st.source is None:
            st.source = source_identity(dir_, (self.params, _stored_bytes(dir_)))
        if self.device.type == "cuda":
            model.set_sdpa(True)
        self.layout = Layout(
            model, self.device, self.dd, fsdp=a.fsdp, tp=a.tp, activation_checkpointing=a.activation_checkpointing
        )
        if on_meta:
            model.to_empty(device=self.device)  # this rank's parts only
            self.layout.tie()
            if self.compute_dtype != torch.float32:
                model.to(self.compute_dtype)
            model.inv_freq = rope_frequencies(self.cfg, self.cfg.max_position_embeddings)[0].to(self.device)
            if not resharding:
                load_parts(dir_, self.layout)
        masks_path = os.path.join(dir_, MASKS_FILE)
        if os.path.exists(masks_path):
            # attached after the layout, so that the mask hooks see this rank's local tensors under TP.
            # A large finite bias on ids with vocab mask 0: softmax weight 0 as with -inf, but no NaN in the loss
            self.handle = attach_masks(
                model, read_masks(masks_path, self.cfg), st.schedule, vocab_fill=-1e30, dtype=self.compute_dtype
            )
            if a.tp > 1:
                self.handle.tp = (self.layout.tp_rank, a.tp)
            for p in self.ds.parts if isinstance(self.ds, MixedDataset) else [self.ds]:
                refuse_padding_ids(p, self.handle.base)
        self.adam = AdamW(self.layout.named_parameters(), beta1=a.beta1, beta2=a.beta2, weight_decay=a.weight_decay)
        opt_path = os.path.join(dir_, OPTIMIZER_FILE)
        if resharding:
            sharded.load(
                os.path.join(dir_, sharded.SHARDED_DIR),
                sharded.state_dict(dict(self.layout.named_parameters()), self.adam),
            )
            self.adam.step = sharded.read_optimizer_meta(dir_)["step"]
        elif os.path.exists(opt_path):
            self.adam.load(opt_path, fill=self.layout.fill)
        else:
            self.adam.step = st.step

    def _open_metrics(self, resumed: bool) -> None:
        a, st = self.a, self.st
        stage = a.stage if a.stage is not None else 0
        if isinstance(stage, str) and stage.isdigit():
            stage = int(stage)
        self.stage = stage
        if self.dd.rank != 0:
            return
        # training from one of the run folder's own checkpoints continues that run: keep its metrics
        ck, out_dir = os.path.realpath(a.checkpoint), os.path.realpath(a.out)
        continues = resumed or (ck != out_dir and ck.startswith(out_dir + os.sep))
        self.metrics = MetricsLog(
            os.path.join(a.out, METRICS_FILE), resume_at_step=st.step if continues else None, truncate=not continues
        )
        g = st.grown_from
        if g is not None:
            rt = (g.get("plan") or {}).get("resolvedTargets")
            self.metrics.log_growth(
                st.step,
                stage,
                None
                if rt is None
                else f"grown to H {rt['hidden_size']}, F {rt['intermediate_size']}, heads {rt['num_attention_heads']}, L {rt['num_hidden_layers']}",
            )

    # ---- train_loop -----------------------------------------------------------------------------

    def train_loop(self) -> None:
        a, st = self.a, self.st
        t0 = time.time()
        announced = self.handle is None or all_one(self.handle.mask_set())
        if st.step >= st.target_step:
            self.log(f"train: {self.dir} is already at step {st.step} (target {st.target_step}); nothing to do")
        while st.step < st.target_step:
            if a.interrupt_after is not None and st.step - st.start_step >= a.interrupt_after:
                st.interrupted = True
                break
            self._test_kill()
            ts = time.time()
            loss, gnorm, lr = self.train_step()
            self._after_step(loss, gnorm, lr, time.time() - ts)
            if not announced and st.step >= self.anneal_end and all_one(self.handle.mask_set()):
                announced = True
                self.log(
                    f"train: every mask reached 1 at step {st.step}; the checkpoint saved from here on can be baked (flm-grow bake <checkpoint> <dest>)"
                )
            if a.save_every > 0 and st.step % a.save_every == 0 and st.step < st.target_step:
                self.save(False)
        if not (st.interrupted or st.step == st.start_step):
            self.save(True)
        self.wait_for_save()  # the last save is complete (manifest written) before the run reports it
        self.checkpoint = st.last_saved or self.dir
        self.seconds = time.time() - t0

    def _test_kill(self) -> None:
        """$FLM_GROW_TEST_KILL=R:S: rank R SIGKILLs itself before step S (the dead-rank tests; a lost
        node or the OOM killer look the same to the other ranks). Only on the first attempt, so that
        a torchrun restart gets past it."""
        spec = os.environ.get(KILL_ENV)
        if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            return
        rank, step = (int(x) for x in spec.split(":"))
        if rank == self.dd.rank and step == self.st.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def _after_step(self, loss: float, gnorm: float, lr: float, seconds: float) -> None:
        """Count the step, evaluate when due, log its metrics line."""
        a, st = self.a, self.st
        B, T = a.batch_size, a.seq_len
        st.losses.append(loss)
        st.step += 1
        st.tokens += B * T
        st.trained_tokens += B * T
        step = st.step
        eval_now = self.has_eval and ((a.eval_every > 0 and step % a.eval_every == 0) or step == st.target_step)
        if eval_now:
            st.last_eval = self.eval_loss()
        m = {"step": step, "tokens": st.tokens, "loss": loss}  # HF global_step: updates done (metrics.ts)
        if eval_now:
            m["evalLoss"] = st.last_eval
        m.update(lr=lr, gradNorm=gnorm, tokensPerSec=(B * T) / max(1e-3, seconds), stage=self.stage)
        if self.handle is not None:
            v = values_at(st.schedule, step - 1 - st.stage_start)
            if v:
                m["masks"] = v
        if self.metrics is not None:
            self.metrics.log_step(js_value(m))
        if (
            not a.quiet
            and self.dd.rank == 0
            and a.log_every > 0
            and (step % a.log_every == 0 or step == st.target_step)
        ):
            self.log(
                f"step {step}/{st.target_step}: loss {loss:.4f} lr {lr:.3e} grad-norm {gnorm:.3f}"
            )  # trainer.ts stepLine
        # the eval and save lines, as trainer.ts stepEvents prints them (HF global_step)
        if eval_now:
            self.log(f"train: step {step}: eval loss {st.last_eval:.4f} (train loss {loss:.4f})")
        if a.save_every > 0 and step % a.save_every == 0:
            self.log(f"train: step {step}: saving {checkpoint_dir_name(step)}")

    # ---- train_step -----------------------------------------------------------------------------

    def set_masks(self, step: int) -> None:
        if self.handle is not None:
            self.handle.set_step(step - self.st.stage_start)

    def loss_of(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """This rank's slice of the batch through the model: the mean cross-entropy."""
        dev = self.device
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.layout.net(inputs[self.lo : self.hi].to(dev))
        flat = targets[self.lo : self.hi].to(dev).reshape(-1)
        logits = at_least_f32(logits)
        # under TP the logits are a DTensor sharded along the vocabulary and the cross-entropy runs
        # on the shards (Layout.loss_context: loss_parallel); the backward pass runs in it too
        with self.layout.loss_context():
            if self.handle is None:
                return _plain(F.cross_entropy(logits.flatten(0, 1), flat))
            # targets whose vocab mask is 0 (a new token before annealing starts) are left out of the
            # mean, as src/train/trainer.ts crossEntropy does: predicting them would cost ~1e30
            per = _plain(F.cross_entropy(logits.flatten(0, 1), flat, reduction="none"))
        live = (self.handle.current["vocab"][flat] > 0).to(per.dtype)
        return (per * live).sum() / live.sum().clamp(min=1)

    def eval_loss(self) -> float:
        a = self.a
        total = 0.0
        with torch.no_grad():
            for k in range(a.eval_batches):
                batch = self.ds.batch_at("eval", k, a.batch_size, a.seq_len, a.seed)
                total += self.dd.mean(float(self.loss_of(*batch)))
        return total / a.eval_batches

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step at st.step: (loss, gradient norm, lr). Stops the run on a bad loss."""
        a, st = self.a, self.st
        self.set_masks(st.step)
        lr = lr_at(st.step, st.lr_schedule)
        inputs, targets = self.ds.batch_at("train", st.step, a.batch_size, a.seq_len, a.seed)
        self.layout.zero_grad()
        loss_t = self.loss_of(inputs, targets)
        with self.layout.loss_context():
            loss_t.backward()
        loss = self.dd.mean(float(loss_t.detach()))
        # DDP's gradients are already averaged across ranks, FSDP2's reduce-scattered: the norm is
        # the same on every rank
        gnorm = self.layout.grad_norm()
        if not (math.isfinite(loss) and math.isfinite(gnorm)) or loss > MAX_LOSS:
            what = (
                "loss is " + str(loss)
                if not math.isfinite(loss)
                else f"loss {loss:.3e} is above {MAX_LOSS}"
                if loss > MAX_LOSS
                else "gradient norm is " + str(gnorm)
            )
            sys.exit(
                f"train: {a.out}: step {st.step}: {what} "
                f"(lr {lr:.3e}); training stopped. Last good checkpoint: {st.last_saved or self.dir + ' (nothing saved in this run)'}. Lower --lr or check the data."
            )
        self.optimizer_step(lr, gnorm)
        # the gradients go as soon as they are used: an eval or a save between steps does not hold them
        self.layout.zero_grad()
        return loss, gnorm, lr

    def optimizer_step(self, lr: float, gnorm: float) -> None:
        """Global-norm clipping folded into AdamW's moment update (adamw.ts)."""
        clip = self.a.clip_grad
        scale = clip / (gnorm + 1e-6) if clip > 0 and gnorm > clip else 1.0
        self.adam.apply(lr, scale)

    # ---- save -----------------------------------------------------------------------------------

    def save(self, complete: bool) -> str:
        """checkpoint-<step>/ in flm-grow's HF layout, written to a temporary folder and renamed, the
        manifest last. Under FSDP2 every rank gathers each tensor in turn; rank 0 writes.
        --sharded-save: every rank writes its own shards (DCP). --async-save: the shards are written
        in the background (start_async_save); the folder has no manifest, and so is an incomplete
        checkpoint that --resume skips, until they are all written."""
        a, st, dd, layout = self.a, self.st, self.dd, self.layout
        t0 = time.time()
        out = os.path.join(a.out, checkpoint_dir_name(st.step))
        self.set_masks(st.step)
        params = dict(layout.named_parameters())
        # one temporary name for the whole job (rank 0's pid would differ on every rank)
        tmp = out + ".tmp"
        shards: Future | None = None
        if a.sharded_save:
            # one save in flight at a time: the previous one is finished and counted first
            self.wait_for_save()
            # an async save fills the checkpoint's own folder: until its manifest is written last,
            # a crash leaves a folder that --resume names and skips ("skipped damaged checkpoint")
            dest = out if a.async_save else tmp
            if dd.rank == 0:
                shutil.rmtree(dest, ignore_errors=True)
                os.makedirs(dest)
            dd.barrier()
            state = sharded.state_dict(params, self.adam)
            path = os.path.join(dest, sharded.SHARDED_DIR)
            if a.async_save:
                shards = sharded.async_save(path, state, self.save_group)  # a copy is taken before it returns
            else:
                sharded.save(path, state)
            del state
            if dd.rank == 0:
                sharded.write_optimizer_meta(dest, self.adam_meta())
        else:
            dest = tmp

            # one tensor at a time: each is gathered (a collective under FSDP2/TP), written by rank 0
            # and dropped, so no rank ever holds the whole model (save_checkpoint_streamed)
            def whole(n: str) -> torch.Tensor:
                return layout.full(params[n].detach())

            if dd.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
                os.makedirs(tmp)
                save_checkpoint_streamed(tmp, [(n, tuple(params[n].shape)) for n in self.names], whole)
            else:
                for n in self.names:
                    whole(n)
            self.adam.save(
                os.path.join(tmp, OPTIMIZER_FILE) if dd.rank == 0 else None, self.names, st.tokens, layout.full
            )
        manifest = None
        if dd.rank == 0:
            cur = self.handle.mask_set() if self.handle is not None else None
            if cur is not None:
                write_masks(os.path.join(dest, MASKS_FILE), cur)
            write_side_files(self.side_files, dest)
            manifest = js_value(self.manifest(complete, cur))
            # config.json (masked form while masks are below 1, with its modeling files) and the
            # model card, as src/train/checkpointing.ts writes them (hf_remote/)
            write_model_files(
                dest,
                js_value(self.cfg.to_json("float32")),
                cur is not None and not all_one(cur),
                train_card(out, self.cfg, cur, manifest, tool_version()),
            )
            if shards is None:
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)
                write_manifest_last(out, manifest)
                prune_checkpoints(a.out, a.keep_checkpoints, out)
        if shards is not None:
            self.start_async_save(out, shards, manifest)
            if complete:
                self.wait_for_save()  # the last save: nothing left to overlap it with
        else:
            dd.barrier()
            st.last_saved = out
        st.save_seconds.append(time.time() - t0)
        return out

    def start_async_save(self, out: str, shards: Future, manifest: dict | None) -> None:
        """Finish an async save in the background once DCP has written every rank's shards: on rank 0
        the manifest, written last (the checkpoint now counts as complete), then the pruning of
        older checkpoints."""
        a, step = self.a, self.st.step

        def finish() -> None:
            shards.result()  # DCP's write: every rank's shards and .metadata (its last collective)
            if manifest is None:
                return
            if (
                os.environ.get(CRASH_IN_SAVE_ENV) == str(step)
                and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            ):
                os.kill(os.getpid(), signal.SIGKILL)
            write_manifest_last(out, manifest)
            prune_checkpoints(a.out, a.keep_checkpoints, out)

        assert self.save_pool is not None and self.pending is None
        self.pending = (out, self.save_pool.submit(finish))

    def wait_for_save(self) -> None:
        """The async save in flight, if any, finished and counted (st.last_saved)."""
        if self.pending is None:
            return
        out, job = self.pending
        self.pending = None
        try:
            job.result()
        except (
            BaseException
        ) as e:  # DCP reports a failed write as a CheckpointException (a BaseException) holding every rank's error
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            said = str(e).strip().splitlines()
            sys.exit(
                f"train: rank {self.dd.rank}: {out}: the background save failed ({said[-1][:200] if said else type(e).__name__})"
            )
        self.st.last_saved = out

    def adam_meta(self) -> dict:
        ad = self.adam
        return {
            "step": ad.step,
            "tokens": self.st.tokens,
            "beta1": ad.beta1,
            "beta2": ad.beta2,
            "eps": ad.eps,
            "weight_decay": ad.weight_decay,
        }

    def manifest(self, complete: bool, cur: dict | None) -> dict:
        a, st = self.a, self.st
        manifest = {
            "format": MANIFEST_FORMAT,
            "kind": "train",
            "created": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "tool": {"name": "flm-grow", "version": tool_version()},
        }
        if st.source is not None:
            manifest["source"] = st.source
        if cur is not None:
            manifest["masks"] = {"file": MASKS_FILE, "schedule": st.schedule}
        manifest["extra"] = {
            "step": st.step,
            "stageStep": st.step - st.stage_start,
            "stageStart": st.stage_start,
            "tokens": st.tokens,
            "runStartStep": st.run_start,
            "targetStep": st.target_step,
            "complete": complete,
            "seed": a.seed,
            "dtype": "F32",
            "lrSchedule": st.lr_schedule,
            "batchSize": a.batch_size,
            "seqLen": a.seq_len,
            "data": {
                "path": a.data if isinstance(self.ds, MixedDataset) else os.path.abspath(a.data),
                "sha256": self.data_sha,
                "tokens": len(self.ds.tokens),
                # the checkpoint's tokenizer, named as trainer.ts names it (tokenizer.ts loadTokenizer)
                "tokenizer": self.tokenizer_name,
            },
            "masksAllOne": cur is None or all_one(cur),
            "lastLoss": st.losses[-1] if st.losses else None,
            "evalLoss": st.last_eval,
            "engine": "torch",
            "processes": self.dd.world,
            "sharding": self.layout.kind,
            "sharded": bool(a.sharded_save),
            "precision": self.precision_label,
        }
        return manifest

    # ---- the end --------------------------------------------------------------------------------

    def peak_rss_per_rank(self) -> list[int]:
        """Every rank's peak resident memory in bytes (ru_maxrss; a collective under torchrun)."""
        import resource

        mine = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024], dtype=torch.int64)
        if self.dd.world == 1:
            return [int(mine[0])]
        import torch.distributed as dist

        every = [torch.zeros_like(mine) for _ in range(self.dd.world)]
        dist.all_gather(every, mine)
        return [int(t[0]) for t in every]

    def close(self) -> dict:
        st = self.st
        self.wait_for_save()
        if self.save_pool is not None:
            self.save_pool.shutdown(wait=True)  # its thread joined before the process group goes
        if self.metrics is not None:
            self.metrics.close()
        peak = self.peak_rss_per_rank() if self.device.type == "cpu" else None
        result = {
            "checkpoint": self.checkpoint,
            "startStep": st.start_step,
            "step": st.step,
            "stageStep": st.step - st.stage_start,
            "losses": st.losses,
            "evalLoss": st.last_eval,
            "parameters": self.params,
            "tokensPerSec": st.trained_tokens / max(1e-9, self.seconds),
            "interrupted": st.interrupted,
            "masksAllOne": self.handle is None or all_one(self.handle.mask_set()),
            "processes": self.dd.world,
            "sharding": self.layout.kind,
            "device": str(self.device),
            "precision": self.precision_label,
            "peakRssPerRank": peak,
            "saveSeconds": st.save_seconds,
        }
        if self.dd.local_rank == 0:
            # one machine-readable line last, for `flm-grow train --engine torch` (on every node: the
            # rendezvous decides which node holds global rank 0, and every node's flm-grow reports)
            print("FLM_GROW_RESULT " + json.dumps(result), flush=True)
        self.dd.close()
        return result


def _test_restart_delay() -> None:
    spec = os.environ.get(RESTART_DELAY_ENV)
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        return
    rank, seconds = spec.split(":")
    if rank == os.environ.get("RANK"):
        time.sleep(float(seconds))


def main(argv: list[str] | None = None) -> dict:
    t = Trainer(parse_args(sys.argv[1:] if argv is None else argv))
    t.open_run()
    t.train_loop()
    return t.close()


def meta_model(cfg) -> torch.nn.Module:
    """The model of `cfg` on the meta device: shapes without storage, to be laid out (FSDP2, TP)
    before anything is allocated, then filled."""
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.tie_weights()
    return model


def load_parts(ckpt_dir: str, layout: Layout) -> None:
    """Fill a laid-out model from the checkpoint's safetensors files one tensor at a time: each
    rank reads only its own block of each tensor (Layout.fill), so no rank ever holds more than
    its parts."""
    from .safetensors_io import SafetensorsFile

    idx = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            where = json.load(f)["weight_map"]
    else:
        where = {n: "model.safetensors" for n in SafetensorsFile(os.path.join(ckpt_dir, "model.safetensors")).keys()}
    params = dict(layout.named_parameters())
    missing = [n for n in params if n not in where]
    if missing:
        raise ValueError(f"{ckpt_dir}: tensors do not match config.json: missing {missing[:4]}")
    for n, p in params.items():
        path = os.path.join(ckpt_dir, where[n])
        f = SafetensorsFile(path, names=[n])
        shape = f.tensors[n]["shape"]
        f.close()
        if tuple(shape) != tuple(p.shape):
            raise ValueError(f"{ckpt_dir}: {n} has shape {list(shape)}, config.json implies {list(p.shape)}")
        layout.fill(path, n, p)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """A loss computed by loss_parallel is a replicated DTensor: the same values on every rank, as
    a plain tensor (differentiable)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _stored_bytes(d):
    if sharded.is_sharded(d):
        return 0  # not asked for: a sharded save is a train checkpoint, whose manifest names its source
    from .safetensors_io import stored_bytes

    return stored_bytes(
        [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors") and f.startswith("model")]
    )


def out_of_memory(e):
    """An allocator failure (MemoryError, or torch's RuntimeError / OutOfMemoryError naming it)."""
    return isinstance(e, MemoryError) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))
    )


def lost_peer(e: BaseException) -> bool:
    """A collective that failed because another process is gone (killed, crashed, node lost)."""
    import torch.distributed as dist

    return isinstance(e, dist.DistError) or (
        isinstance(e, RuntimeError)
        and any(k in str(e) for k in ("gloo", "NCCL", "Connection reset", "Connection closed"))
    )


def _run() -> None:
    """main(), with the failures that are not bugs turned into one line and an exit code."""
    try:
        main()
    except ManifestError as e:
        # a hand-edited manifest is bad input: one line naming the file and field, exit 2
        print(f"train: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (MemoryError, RuntimeError) as e:
        if lost_peer(e) and not out_of_memory(e):
            # the rank that died is the news, not this one's broken collective: torchrun (elastic.py)
            # names it once it has stopped the job
            rank = os.environ.get("RANK", "?")
            sys.exit(
                f"train: rank {rank}: a collective failed because another process is gone ({str(e).strip().splitlines()[-1][:160]})"
            )
        if not out_of_memory(e):
            raise
        # one line instead of a traceback: what ran out and what a step needs
        sys.exit(
            f"train: out of memory ({str(e).strip().splitlines()[-1][:200]}). A training step holds about 16 bytes per "
            "parameter (f32 weights, gradients and AdamW moments; 32 with --precision f64) plus activations and "
            "twice the largest tensor; use a machine with more memory, or several GPUs with --nproc N --fsdp"
        )


def cli() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        _run()
        return
    # A torchrun rank leaves without C++ teardown, whether it finished or failed: after DDP, FSDP or
    # TP were built on a gloo group, destroy_process_group leaves gloo's threads running, and one of
    # them can abort the process at interpreter shutdown ("terminate called without an active
    # exception", SIGABRT; seen under load), replacing a finished run's exit 0 or a failure's own
    # message and code. What is said is printed and flushed, and atexit handlers (the run lock) run
    # first.
    code: int
    try:
        _run()
        code = 0
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            code = 1
        else:
            code = 0 if e.code is None else int(e.code)
    except Exception:  # a bug: its traceback, as Python would print it, and exit 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    if code == 0 and os.environ.get("FLM_GROW_TEST_ABORT_AT_EXIT") == os.environ.get("RANK"):
        os.abort()  # test hook: a teardown fault after the run finished (test/torch/distributed.test.ts)
    os._exit(code)


if __name__ == "__main__":
    cli()
