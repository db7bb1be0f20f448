"""python -m flm_grow_torch.launch --nproc N -m MODULE ARGS...

A minimal torchrun for one machine: starts N processes with torchrun's environment (RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), waits for all, and stops the
rest when one fails. flm-grow uses it because torchrun of Debian's torch 1.13 fails under
Python 3.11 before starting any worker; with torch 2.x `torchrun --nproc-per-node N -m MODULE`
is equivalent.
"""

import argparse
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(prog="python -m flm_grow_torch.launch")
    p.add_argument("--nproc", type=int, required=True)
    p.add_argument("-m", dest="module", required=True)
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    port = str(free_port())
    procs = []
    for r in range(a.nproc):
        env = dict(
            os.environ,
            RANK=str(r),
            LOCAL_RANK=str(r),
            WORLD_SIZE=str(a.nproc),
            LOCAL_WORLD_SIZE=str(a.nproc),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        procs.append(subprocess.Popen([sys.executable, "-m", a.module] + a.args, env=env))
    code = 0
    while procs:
        for pr in list(procs):
            rc = pr.poll()
            if rc is None:
                continue
            procs.remove(pr)
            if rc != 0 and code == 0:
                code = rc
                for other in procs:  # one rank failed: the others would wait forever in a collective
                    other.terminate()
        time.sleep(0.05)
    sys.exit(code)


if __name__ == "__main__":
    main()
