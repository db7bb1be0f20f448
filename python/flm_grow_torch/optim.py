"""AdamW and LR schedules exactly as src/train/adamw.ts and src/train/lr-schedule.ts, so the
torch engine continues a run (or a grown checkpoint's optimizer.safetensors) where flm-grow's
tfjs trainer would."""

import math

import torch

from .options import default

OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_FORMAT = "flm-grow-adamw"


def lr_at(step, s):
    """LR for global `step` (lr-schedule.ts lrAt): linear warmup from lr/W, then cosine/linear
    decay to minLr over totalSteps, all counted from startStep."""
    t = max(0, step - s.get("startStep", 0))
    lr, min_lr, w, total = s["lr"], s["minLr"], s["warmupSteps"], s["totalSteps"]
    if t < w:
        return lr * (t + 1) / w
    if s["schedule"] == "constant":
        return lr
    p = min(1.0, (t - w) / (total - w)) if total > w else 1.0
    if s["schedule"] == "linear":
        return lr - (lr - min_lr) * p
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))


def moment_dtype(p):
    """f32 moments and update for f32 (and narrower) weights; f64 for f64 weights (--precision f64)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class AdamW:
    """Bias-corrected moments, decoupled weight decay on matrices only (adamw.ts):
    p <- p - lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) - lr * wd * p   (p: the value before the step)."""

    def __init__(self, named_params, beta1=None, beta2=None, eps=1e-8, weight_decay=None):
        self.params = dict(named_params)
        beta1 = default("beta1") if beta1 is None else beta1
        beta2 = default("beta2") if beta2 is None else beta2
        weight_decay = default("weight-decay") if weight_decay is None else weight_decay
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.step = 0
        self.exp_avg = {n: torch.zeros_like(p, dtype=moment_dtype(p)) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p, dtype=moment_dtype(p)) for n, p in self.params.items()}

    @torch.no_grad()
    def apply(self, lr, grad_scale=1.0):
        self.step += 1
        t = self.step
        bc1 = 1 - self.beta1**t
        bc2 = 1 - self.beta2**t
        for n, p in self.params.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            g = g.to(moment_dtype(p))
            m, v = self.exp_avg[n], self.exp_avg_sq[n]
            # in place, the clip scale folded into the coefficients: one temporary per tensor
            # instead of a dozen (the update was most of a CPU step on a 17M model)
            m.mul_(self.beta1).add_(g, alpha=(1 - self.beta1) * grad_scale)
            v.mul_(self.beta2).addcmul_(g, g, value=(1 - self.beta2) * grad_scale * grad_scale)
            denom = v.div(bc2).sqrt_().add_(self.eps)
            if self.weight_decay != 0 and p.dim() >= 2:
                p.mul_(1 - lr * self.weight_decay)  # p - lr*wd*p, with p the value before the step
            p.addcdiv_(m, denom, value=-lr / bc1)

    def load(self, path, place=None, fill=None):
        """Moments and step from optimizer.safetensors (hyperparameters stay as given). One tensor
        is read at a time: the file is twice the model, and holding all of it beside the moments
        it replaces would be the run's memory peak. `place(full, like)` turns a full tensor into
        this rank's part laid out like the moment it replaces (parallel.Layout.place: a shard under
        FSDP2); by default the tensor is moved to the moment's device and dtype. `fill(path, name, like)`
        instead reads only this rank's part of each moment into it (parallel.Layout.fill)."""
        from .safetensors_io import SafetensorsFile

        f = SafetensorsFile(path)
        try:
            md = f.metadata or {}
            if md.get("format") != OPTIMIZER_FORMAT:
                raise ValueError(f"{path}: not an {OPTIMIZER_FORMAT} optimizer state")
            for n, p in self.params.items():
                for key, store in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                    name = f"{key}.{n}"
                    if name not in f.tensors:
                        raise ValueError(f"{path}: tensor {name} is missing")
                    if tuple(f.tensors[name]["shape"]) != tuple(p.shape):
                        raise ValueError(
                            f"{path}: {name} has shape {list(f.tensors[name]['shape'])}, the weight has {list(p.shape)}"
                        )
                    if fill is not None:
                        fill(path, name, store[n])  # this rank's part only, in place (parallel.Layout.fill)
                        continue
                    like = store[n]
                    store[n] = None  # the zeros go before the stored moments come in
                    full = f.get(name)
                    store[n] = (
                        place(full, like) if place is not None else full.to(device=p.device, dtype=moment_dtype(p))
                    )
                    del like, full
        finally:
            f.close()
        self.step = int(float(md["step"]))
        return read_meta(md, path)

    def save(self, path, names, tokens, full=None):
        """optimizer.safetensors in the layout of optimizer-state.ts (names in weight order; f32 whatever
        the compute dtype). `full(t)` gathers a sharded moment (parallel.Layout.full, a collective:
        every rank calls save, and only the one with a `path` writes). Written one moment at a time
        (safetensors_io.save_file_streamed): the writing rank holds at most one whole moment
        beside its own shards, never the whole state."""
        from .safetensors_io import save_file_streamed

        which = {}
        specs = []
        for n in names:
            for key, store in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                which[f"{key}.{n}"] = (store, n)
                specs.append((f"{key}.{n}", torch.float32, tuple(self.params[n].shape)))

        def tensor_of(name):
            store, n = which[name]
            return store[n] if full is None else full(store[n])

        if path is None:
            if full is not None:
                for name, _, _ in specs:  # this rank's half of each gather, in the writer's order
                    tensor_of(name)
            return
        save_file_streamed(
            path,
            specs,
            tensor_of,
            {
                "format": OPTIMIZER_FORMAT,
                "step": js_num(self.step),
                "tokens": js_num(tokens),
                "beta1": js_num(self.beta1),
                "beta2": js_num(self.beta2),
                "eps": js_num(self.eps),
                "weight_decay": js_num(self.weight_decay),
            },
        )


def read_meta(md, path):
    out = {}
    for k in ("step", "tokens", "beta1", "beta2", "eps", "weight_decay"):
        try:
            out[k] = float(md[k])
        except (KeyError, ValueError):
            raise ValueError(f"{path}: metadata field {k!r} is missing or not a number") from None
    out["step"], out["tokens"] = int(out["step"]), int(out["tokens"])
    return out


def read_optimizer_meta(path):
    from .safetensors_io import SafetensorsFile

    f = SafetensorsFile(path)
    try:
        if (f.metadata or {}).get("format") != OPTIMIZER_FORMAT:
            raise ValueError(f"{path}: not an {OPTIMIZER_FORMAT} optimizer state")
        return read_meta(f.metadata, path)
    finally:
        f.close()


def js_num(x):
    """A number as JavaScript's String(x) writes it: shortest round-trip digits, fixed notation
    for 1e-6 <= |x| < 1e21, otherwise d.ddde±n (so metadata reads the same from either engine)."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else ("NaN" if x != x else ("Infinity" if x > 0 else "-Infinity"))
    sign = "-" if x < 0 else ""
    mant, _, exp = repr(abs(x)).partition("e")
    digits, _, frac = mant.partition(".")
    e = int(exp or 0) + len(digits) - 1  # decimal exponent of the first digit
    ds = (digits + frac).lstrip("0")
    lead_zeros = len(digits + frac) - len((digits + frac).lstrip("0"))
    e -= lead_zeros
    ds = ds.rstrip("0") or "0"
    if 1e-6 <= abs(x) < 1e21:
        if e >= len(ds) - 1:
            return sign + ds + "0" * (e - len(ds) + 1)
        if e >= 0:
            return sign + ds[: e + 1] + "." + ds[e + 1 :]
        return sign + "0." + "0" * (-e - 1) + ds
    return sign + ds[0] + ("." + ds[1:] if len(ds) > 1 else "") + "e" + ("+" if e > 0 else "-") + str(abs(e))


def js_value(v):
    """JSON values as JSON.stringify writes them: integral floats as integers."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    if isinstance(v, dict):
        return {k: js_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [js_value(x) for x in v]
    return v
