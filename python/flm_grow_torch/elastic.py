"""python -m flm_grow_torch.elastic TORCHRUN-ARGS... -m MODULE ARGS...

torchrun itself (torch.distributed.run: the elastic agent, c10d rendezvous, --max-restarts), with
one thing added: when a worker fails, the failure is reported by name in one line (which rank,
which signal or exit code, whether the kernel's log shows the out-of-memory killer ending it) and
as a machine-readable `FLM_GROW_WORKER_FAILURE {json}` line for `flm-grow train`, instead of
torchrun's ChildFailedError traceback. Everything else, flags included, is torchrun's:
`torchrun --nproc-per-node 2 -m flm_grow_torch.train ...` runs the same workers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from typing import Any

FAILURE_PREFIX = "FLM_GROW_WORKER_FAILURE "
# torch.distributed.elastic: "1" keeps the rendezvous store to the agent (see main)
SHARE_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def kernel_oom_kill(pid: int) -> bool | None:
    """True when the kernel log says the OOM killer killed `pid`, False when it is readable and
    does not, None when it cannot be read (dmesg needs privileges on many systems)."""
    try:
        r = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    for line in r.stdout.splitlines():
        if f"Killed process {pid} " in line or ("oom-kill" in line and f",pid={pid}," in line):
            return True
    return False


def describe_failures(failures: dict[int, Any], max_restarts: int) -> dict:
    """The root cause among torchrun's failures: a worker that died of a signal other than the agent's
    own SIGTERM (the others then fail in a collective or are stopped by the agent), else one that
    exited with an error, else the earliest."""

    def order(kv: tuple[int, Any]) -> tuple[int, float, int]:
        code = kv[1].exitcode
        # SIGTERM/SIGINT: the agent stopping the survivors; a failed collective: the survivors' own exit
        kind = 0 if code < 0 and -code not in (signal.SIGTERM, signal.SIGINT) else 1 if code > 0 else 2
        return (kind, kv[1].timestamp, kv[0])

    items = sorted(failures.items(), key=order)
    rank, f = items[0]
    out: dict[str, Any] = {
        "rank": rank,
        "localRank": f.local_rank,
        "pid": f.pid,
        "exitCode": f.exitcode,
        "maxRestarts": max_restarts,
        "failed": sorted(failures),
    }
    if f.exitcode < 0:
        out["signal"] = f.signal_name()
        if out["signal"] == "SIGKILL":
            out["oomKiller"] = kernel_oom_kill(f.pid)
    return out


def failure_line(d: dict) -> str:
    how = (
        f"was killed by {d['signal']} (signal {-d['exitCode']})"
        if "signal" in d
        else f"exited with code {d['exitCode']}"
    )
    if d.get("oomKiller") is True:
        how += "; the kernel log shows the out-of-memory killer ended it"
    elif d.get("signal") == "SIGKILL":
        how += (
            " (on Linux usually the out-of-memory killer or a lost node; "
            + (
                "the kernel log does not name this pid"
                if d.get("oomKiller") is False
                else "dmesg was not readable to confirm"
            )
            + ")"
        )
    restarts = f" after {d['maxRestarts']} restart(s) (--max-restarts {d['maxRestarts']})" if d["maxRestarts"] else ""
    return f"torchrun: rank {d['rank']} (local rank {d['localRank']}, pid {d['pid']}) {how}; the job stopped{restarts}"


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # --max-restarts: since torch 2.4 the c10d rendezvous lends the agent's own TCPStore to the
    # workers (TORCHELASTIC_USE_AGENT_STORE) and, in torch 2.13, keeps that one store for every
    # restart, with no per-attempt key prefix. The restarted workers' gloo set-up then reads the
    # dead attempt's addresses (each rank's "rank_<r>" key under default_pg/) and connects to the
    # killed rank's old port: "Connection refused" or a hang, depending on which rank writes first
    # (pytorch/pytorch#135712). torch's own opt-out gives every rendezvous round a fresh store
    # hosted by the round's rank 0 on a free port, so nothing of an earlier attempt is left to read.
    os.environ.setdefault(SHARE_STORE_ENV, "1")
    # the agent's own report of a failure is a multi-line table; ours is the line below
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        d = describe_failures(e.failures, args.max_restarts)
        print(failure_line(d), file=sys.stderr, flush=True)
        print(FAILURE_PREFIX + json.dumps(d), file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
