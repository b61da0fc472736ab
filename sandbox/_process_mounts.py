"""The mount namespace attempts run in (root only), prepared once by the zygote.

Dropping to a slot uid is what keeps root-only files and other processes' ``/proc/<pid>/environ``
away from connector code, but it also locks the child out of a Python that lives under a private
directory (pyenv under ``/root``, mode 0700): any module not imported before the fork fails to
load. So the child joins a mount namespace where each such private directory is replaced by an
empty tmpfs (mode 0711) holding bind mounts of just what Python needs — ``/root/.pyenv`` becomes
reachable, the rest of ``/root`` is gone — and where every ``hide`` path (the hub's data dir, say)
is covered by an empty, unreadable tmpfs.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from collections.abc import Iterable

from sandbox._process_zygote import _check, _libc, setns, unshare

CLONE_NEWNS = 0x00020000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RDONLY = 1


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = os.fsencode
    _check(
        _libc.mount(
            enc(source) if source else None,
            enc(target),
            enc(fstype) if fstype else None,
            ctypes.c_ulong(flags),
            enc(data) if data else None,
        ),
        f"mount {target}",
    )


def needed_paths() -> list[str]:
    """Everything Python may read after the fork: the path, the prefixes, imported modules' dirs."""
    paths = set(sys.path) | {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        if f:
            paths.add(os.path.dirname(f))
    return sorted(os.path.realpath(p) for p in paths if p and os.path.exists(p))


def expose_plan(paths: Iterable[str]) -> dict[str, set[str]]:
    """Directories others cannot traverse, each with the entries below it that must be reachable."""
    plan: dict[str, set[str]] = {}
    for path in paths:
        cur = "/"
        for name in path.strip("/").split("/"):
            if not name:
                continue
            try:
                mode = os.stat(cur).st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                plan.setdefault(cur, set()).add(name)
            cur = os.path.join(cur, name)
    return plan


#: World-writable places covered by an empty read-only tmpfs: an attempt writes only to its own
#: dir, and leaves no files behind for the next attempt (or another slot) to find.
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")


def make_namespace(hide: Iterable[str], workdir: str) -> tuple[int, list[str]]:
    """Build the attempts' mount namespace; returns an fd of it and the paths made reachable.

    ``workdir`` (where the attempts' private dirs are made) stays reachable and writable.

    The zygote enters the new namespace to build it and goes back to its own at the end.
    """
    needed = needed_paths()
    plan = expose_plan(needed)
    workdir = os.path.realpath(workdir)
    sources: dict[str, int] = {}
    orig = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNS)
        try:
            # Private first, or the mounts below would propagate back to the host.
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            # Open what is to be exposed while it is still visible (the tmpfs covers the way there),
            # and from inside the new namespace: a bind mount cannot take a source from another one.
            for parent, names in plan.items():
                for name in names:
                    path = os.path.join(parent, name)
                    sources.setdefault(path, os.open(path, os.O_PATH | os.O_CLOEXEC))
            for parent in sorted(plan, key=lambda p: p.count("/")):
                mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0711,size=64k")
                for name in sorted(plan[parent]):
                    path = os.path.join(parent, name)
                    if stat.S_ISDIR(os.stat(f"/proc/self/fd/{sources[path]}").st_mode):
                        os.mkdir(path, 0o711)
                    else:
                        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                    mount(f"/proc/self/fd/{sources[path]}", path, None, MS_BIND | MS_REC)
            for path in hide:
                if os.path.isdir(path):
                    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "mode=000,size=4k")
                elif os.path.exists(path):
                    mount("/dev/null", path, None, MS_BIND)
            for shared in SHARED_TMP:
                if os.path.realpath(shared) != shared or not os.path.isdir(shared):
                    continue
                # What must stay reachable below it: the attempts' workdir (writable) and, when Python
                # itself lives there (a venv or checkout in /tmp), those paths, read-only.
                inside = sorted(p for p in needed if p.startswith(shared + "/"))
                python_paths = [p for p in inside if not any(p.startswith(q + "/") for q in inside if q != p)]
                keeps = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC), True) for p in python_paths]
                if workdir.startswith(shared + "/"):
                    keeps.append((workdir, os.open(workdir, os.O_PATH | os.O_CLOEXEC), False))
                flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
                mount("tmpfs", shared, "tmpfs", flags, "mode=0755,size=64k")
                for path, fd, read_only in keeps:
                    os.makedirs(path, 0o711, exist_ok=True)
                    mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
                    if read_only:
                        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
                    os.close(fd)
                mount("tmpfs", shared, "tmpfs", flags | MS_REMOUNT | MS_RDONLY, "mode=0755,size=64k")
            ns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        finally:
            setns(orig, CLONE_NEWNS)
    finally:
        os.close(orig)
        for fd in sources.values():
            os.close(fd)
    return ns, sorted(sources)
