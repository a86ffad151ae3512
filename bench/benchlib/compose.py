"""Scenario 7: the Compose deployments as users run them, rondo's (`docker-compose.yml`) and
nginx's in the same layout (`-f docker-compose.yml -f docker-compose.nginx.yml`), each under its
own project name with its balancer published on a free port of the host; torn down on `down()`,
which callers put in a `finally`.

The balancer's CPU time and memory are read from /proc on the host: the balancer container's
main process (`docker inspect` .State.Pid) and its descendants (nginx's workers). The load
goes through Docker's published port, so through docker-proxy: its CPU is not counted.
"""

import os
import shutil
import subprocess
import time

from . import procs


def available():
    """None when `docker compose` works, else why not."""
    if shutil.which("docker") is None:
        return "docker is not installed (scripts/ensure-docker installs it)"
    done = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return "`docker compose version` failed (scripts/ensure-docker installs Compose v2)"
    return None


class Deployment:
    """One compose project; `name` is the balancer's display name."""

    def __init__(self, root, name, files, env=None):
        self.root = root
        self.name = name
        self.files = files
        self.project = f"rondo-bench-{name.lower()}-{os.getpid()}-{time.time_ns() % 10**9}"
        self.port = procs.free_port()
        self.admin_port = procs.free_port()
        self.env = dict(
            os.environ,
            RONDO_PORT=str(self.port),
            RONDO_ADMIN_PORT=str(self.admin_port),
            **(env or {}),
        )
        self._root_pid = None

    def compose(self, *args, timeout=600):
        argv = ["docker", "compose"]
        for f in self.files:
            argv += ["-f", f]
        argv += ["-p", self.project, *args]
        done = subprocess.run(
            argv,
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def up(self):
        self.compose("up", "-d", "--build", "--wait", "--wait-timeout", "180")
        procs.wait_for_port(self.port, what=f"{self.name}'s published port")
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def root_pid(self):
        if self._root_pid is None:
            cid = self.compose("ps", "-q", "balancer").split()[0]
            done = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", cid],
                capture_output=True,
                text=True,
                check=True,
            )
            self._root_pid = int(done.stdout.strip())
        return self._root_pid

    def pids(self):
        return procs.tree(self.root_pid)

    def down(self):
        try:
            self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180)
        except Exception as err:  # a teardown failure must not hide the error that led here
            print(f"bench: teardown of {self.project} failed: {err}", flush=True)


def rondo(root):
    return Deployment(root, "rondo", ["docker-compose.yml"], {"RONDO_ACCESS_LOG": "off"})


def nginx(root):
    return Deployment(root, "nginx", ["docker-compose.yml", "docker-compose.nginx.yml"])
