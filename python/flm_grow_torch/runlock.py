"""One writer per run folder: the protocol of src/util/run-lock.ts, for the trainer started on its
own (`flm-grow-train`, `torchrun -m flm_grow_torch.train`). `<out>/.flm-grow-lock` is created with
O_EXCL and holds host, pid, the pid's start time and the command; a lock of a dead process on this
host is taken over, one of another host only with take_over=True. When flm-grow starts the trainer
it holds the lock itself and says so in FLM_GROW_LOCK_HELD."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import os
import socket
import sys

LOCK_FILE = ".flm-grow-lock"
LOCK_HELD_ENV = "FLM_GROW_LOCK_HELD"


class RunLockError(RuntimeError):
    pass


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return int(s[s.rindex(")") + 2 :].split(" ")[19])
    except (OSError, ValueError, IndexError):
        return None


def holder_alive(h: dict) -> bool:
    try:
        os.kill(int(h["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    if h.get("pidStart") is None:
        return True
    now = process_start_time(int(h["pid"]))
    return now is None or now == h["pidStart"]


def describe(h: dict) -> str:
    return f"pid {h.get('pid')} on {h.get('host')}, started {h.get('startedAt')}: {h.get('command')}"


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            h = json.load(f)
        return h if isinstance(h.get("pid"), int) and isinstance(h.get("host"), str) else None
    except (OSError, ValueError, AttributeError):
        return None


def acquire(folder: str, take_over: bool = False, log=print) -> str | None:
    """Take the lock of `folder` (created if absent) and release it at exit; returns its path, or
    None when the parent flm-grow holds it. Raises RunLockError naming a live holder."""
    path = os.path.join(folder, LOCK_FILE)
    if os.environ.get(LOCK_HELD_ENV) == path:
        return None
    os.makedirs(folder, exist_ok=True)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pidStart": process_start_time(os.getpid()),
        "startedAt": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
        "command": " ".join(sys.argv),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            h = _read(path)
            if h is None:
                raise RunLockError(
                    f"{path} exists but is not a flm-grow lock this version can read; if no flm-grow job writes {folder}, delete it"
                ) from None
            same_host = h["host"] == me["host"]
            if same_host and holder_alive(h):
                raise RunLockError(
                    f"run folder {folder} is in use by another flm-grow job ({describe(h)}); wait for it to end, or give another folder"
                ) from None
            if not same_host and not take_over:
                raise RunLockError(
                    f"run folder {folder} is locked by a flm-grow job on another host ({describe(h)}); "
                    "if that job is no longer running, pass --take-over-lock"
                ) from None
            aside = f"{path}.stale-{os.getpid()}"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            moved = _read(aside)
            if moved is not None and (moved.get("pid"), moved.get("startedAt")) != (h["pid"], h.get("startedAt")):
                with contextlib.suppress(OSError):
                    os.link(aside, path)
                    os.remove(aside)
                continue
            os.remove(aside)
            log(f"run folder {folder}: taking over the lock of {describe(h)}")
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")

        def release():
            h = _read(path)
            if h is not None and h["pid"] == me["pid"] and h.get("startedAt") == me["startedAt"]:
                with contextlib.suppress(OSError):
                    os.remove(path)

        atexit.register(release)
        return path
    raise RunLockError(f"cannot take the lock {path}: it changed hands three times while this job tried; try again")
