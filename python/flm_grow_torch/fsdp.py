"""--fsdp: FullyShardedDataParallel for models whose weights, gradients and AdamW moments do not
fit one device. Each decoder layer is one FSDP unit; every rank keeps 1/N of the parameters and
moments and gathers a layer's weights only while it runs.

The update is the engine's AdamW (optim.AdamW: bias-corrected moments, decoupled weight decay on
matrices only, global-norm clipping), expressed with torch.optim.AdamW, whose step is the same
formula (p *= 1 - lr*wd; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)), because FSDP shards and
gathers optimizer state only for torch.optim optimizers. Moments are read from and written to
optimizer.safetensors in flm-grow's layout through FSDP's full (unsharded, rank-0) state dicts,
so a checkpoint saved under --fsdp is the same folder a DDP or tfjs run saves.

FSDP needs CUDA: torch's FullyShardedDataParallel takes its compute device from
torch.cuda.current_device() (torch 1.13: FullyShardedDataParallel._get_compute_device), so on
CPU the engine refuses --fsdp and names DDP (the default) instead. use_orig_params (per-weight
names and dims for the weight-decay groups) needs torch >= 2.0.
"""

import torch

from .optim import OPTIMIZER_FORMAT, js_num
from .safetensors_io import load_file, save_file


def fsdp_unavailable(device):
    """Why --fsdp cannot run here, or None."""
    if device.type != "cuda":
        return (
            "--fsdp needs CUDA GPUs (NCCL): torch's FullyShardedDataParallel computes on a CUDA device "
            "(torch 1.13 asks torch.cuda.current_device() even for a CPU module), so it does not run on CPU with gloo. "
            "On CPU train without --fsdp (DDP: each process holds the whole model, the batch is split)"
        )
    major = int(torch.__version__.split(".")[0])
    if major < 2:
        return (
            f"--fsdp needs torch >= 2.0 (FullyShardedDataParallel's use_orig_params); this is torch {torch.__version__}"
        )
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel  # noqa: F401
    except Exception as e:  # e.g. Debian's torch 1.13 under Python 3.11: a dataclass error at import
        return f"--fsdp: torch.distributed.fsdp does not import here ({type(e).__name__}: {e})"
    return None


class FsdpUpdater:
    """The model under FSDP plus its optimizer; the trainer's update, norm and save go through it."""

    def __init__(self, model, device, layer_class, beta1, beta2, weight_decay, eps=1e-8):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        self.FSDP = FSDP
        # names and ranks before wrapping: FSDP's full state dicts use the same (unprefixed) names
        self.names = [n for n, _ in model.named_parameters()]
        self.matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}
        self.net = FSDP(model, device_id=device, use_orig_params=True, auto_wrap_policy=ModuleWrapPolicy({layer_class}))
        decay = [p for n, p in self._named() if n in self.matrices]
        rest = [p for n, p in self._named() if n not in self.matrices]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=0.0,
            betas=(beta1, beta2),
            eps=eps,
        )
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.step = 0

    def _named(self):
        # FSDP keeps the original parameters (use_orig_params) under prefixed names
        return [(self._clean(n), p) for n, p in self.net.named_parameters()]

    @staticmethod
    def _clean(n):
        return n.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")

    def zero_grad(self):
        self.opt.zero_grad(set_to_none=True)

    def grad_norm_and_clip(self, clip):
        """The global gradient norm over all shards; with clip > 0 the gradients are scaled to it."""
        return float(self.net.clip_grad_norm_(clip if clip > 0 else float("inf")))

    def apply(self, lr):
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.step += 1

    def load(self, path):
        """Moments and step from optimizer.safetensors (full tensors; FSDP shards them)."""
        tensors, md = load_file(path)
        if (md or {}).get("format") != OPTIMIZER_FORMAT:
            raise ValueError(f"{path}: not an {OPTIMIZER_FORMAT} optimizer state")
        step = int(float(md["step"]))
        state = {}
        for n in self.names:
            if f"exp_avg.{n}" not in tensors or f"exp_avg_sq.{n}" not in tensors:
                raise ValueError(f"{path}: tensor exp_avg.{n} or exp_avg_sq.{n} is missing")
            state[n] = {
                "step": torch.tensor(float(step)),
                "exp_avg": tensors[f"exp_avg.{n}"].float(),
                "exp_avg_sq": tensors[f"exp_avg_sq.{n}"].float(),
            }
        full = {
            "state": state,
            "param_groups": [
                dict(g, params=[self._clean(n) for n in names])
                for g, names in zip(self._groups(), self._group_names(), strict=True)
            ],
        }
        # keywords: the positional order changed between torch 2.0 and 2.1
        self.opt.load_state_dict(
            self.FSDP.optim_state_dict_to_load(model=self.net, optim=self.opt, optim_state_dict=full)
        )
        self.step = step

    def _groups(self):
        return [{k: v for k, v in g.items() if k != "params"} for g in self.opt.param_groups]

    def _group_names(self):
        by_id = {id(p): n for n, p in self._named()}
        return [[by_id[id(p)] for p in g["params"]] for g in self.opt.param_groups]

    def full_state(self):
        """(weights, moments) as full CPU tensors on rank 0 (empty elsewhere); every rank must call it."""
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

        with self.FSDP.state_dict_type(
            self.net,
            StateDictType.FULL_STATE_DICT,
            FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
            FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=True),
        ):
            weights = {self._clean(k): v for k, v in self.net.state_dict().items()}
            osd = self.FSDP.optim_state_dict(self.net, self.opt)
        moments = {self._clean(k): v for k, v in osd.get("state", {}).items()}
        return weights, moments

    def save(self, path, weights, moments, tokens):
        """optimizer.safetensors from full_state()'s tensors (rank 0), in the layout optim.AdamW.save writes."""
        t = {}
        for n in self.names:
            s = moments.get(n)  # a weight that never had a gradient has no state yet: zero moments
            for key in ("exp_avg", "exp_avg_sq"):
                t[f"{key}.{n}"] = (s[key] if s is not None else torch.zeros_like(weights[n])).detach().float().cpu()
        save_file(
            path,
            t,
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
