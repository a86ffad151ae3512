"""Processes: starting and stopping the ones we own, and reading their CPU time and memory.

CPU time is `utime + stime` of /proc/<pid>/stat, which for a process counts all its threads;
a multi-process server (nginx: master and workers) is the tree of processes under the pid we
started. Memory is the sum of VmRSS (/proc/<pid>/status) over the tree, and of Pss
(/proc/<pid>/smaps_rollup), which splits pages shared between nginx's master and workers
instead of counting them once per process.
"""

import os
import signal
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    """A TCP port of 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit(wanted=200_000):
    """Raises this process's open-file limit (inherited by everything it starts) towards
    `wanted`: the soft limit up to the hard one, and as root the hard one too; returns the
    new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        except (OSError, ValueError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return fd_limit()


def fd_limit():
    """This process's soft open-file limit."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_for_port(port, proc=None, timeout=15.0, what="server"):
    """Waits until 127.0.0.1:`port` accepts a connection. Raises with `what`'s log when `proc`
    exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def _children_map():
    """ppid -> [pid] over every process of the machine, from /proc/<pid>/stat."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_stat(int(entry))
        if stat is not None:
            children.setdefault(stat[1], []).append(int(entry))
    return children


def _read_stat(pid):
    """(state, ppid, utime + stime, utime) in ticks of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain anything: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[11])


def tree(root):
    """`root` and all its descendants that are alive now."""
    children = _children_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(f"/proc/{pid}"):
            pids.append(pid)
            todo.extend(children.get(pid, []))
    return pids


def _ticks(pids, field):
    """{pid: `_read_stat` field `field`} of the `pids` that still exist."""
    out = {}
    for pid in pids:
        stat = _read_stat(pid)
        if stat is not None:
            out[pid] = stat[field]
    return out


def cpu_ticks(pids):
    """{pid: utime + stime in clock ticks} of the `pids` that still exist."""
    return _ticks(pids, 2)


def user_ticks(pids):
    """{pid: utime in clock ticks} of the `pids` that still exist: the user-space share of
    `cpu_ticks`, where changes to the request path show before the kernel's share buries them."""
    return _ticks(pids, 3)


def cpu_seconds_between(before, after):
    """CPU seconds spent between two `cpu_ticks` (or two `user_ticks`) readings. A process
    present only in `after` (started in between) counts in full; one gone by `after` counts up
    to `before` only."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
    return ticks / CLK_TCK


def _status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pids):
    """Sum of VmRSS over `pids`, in KiB."""
    return sum(_status_kib(pid, "VmRSS") for pid in pids)


def hwm_kib(pids):
    """Sum of VmHWM (each process's own peak RSS) over `pids`, in KiB."""
    return sum(_status_kib(pid, "VmHWM") for pid in pids)


def pss_kib(pids):
    """Sum of Pss over `pids`, in KiB (0 where smaps_rollup cannot be read)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class MemorySampler:
    """Samples the summed VmRSS of a process tree every `interval` seconds in a thread, from
    `start()` to `stop()`; `peak_kib` is the largest sum seen (at least one sample is taken)."""

    def __init__(self, root, interval=0.2):
        self.root = root
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self, pids):
        self.peak_kib = max(self.peak_kib, rss_kib(pids))

    def start(self):
        pids = tree(self.root)
        self._sample(pids)

        def loop():
            while not self._stop.wait(self.interval):
                self._sample(pids)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample(tree(self.root))
        return self.peak_kib


class Process:
    """A process we started, with its output in a log file; `stop()` ends it by its pid
    (`sig` first, SIGKILL after `grace` seconds) and is safe to call twice."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def poll(self):
        return self.proc.poll()

    @property
    def returncode(self):
        return self.proc.returncode

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, grace=5.0):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
