"""The seven scenarios of issue 6 and the interleaved rounds that measure them.

Within a scenario, every balancer is started once (fresh, on its own port), warmed up with a
short wrk run, and then measured in rounds in the order rondo, nginx, HAProxy, rondo, ... so a
slow drift of the machine (heat, another job) spreads over all three instead of favouring one.
One measurement: CPU ticks of the balancer's process tree read before and after a wrk run,
peak summed RSS sampled during it, and wrk's own figures.
"""

import contextlib
import shlex
import time
from dataclasses import dataclass, field

from . import balancers, compose, idle, procs, wrk


@dataclass
class Scenario:
    id: int
    title: str
    kind: str = "wrk"  # "wrk" (host balancers), "idle" (scenario 6), "compose" (scenario 7)
    path: str = "/"
    connections: int = 64
    headers: tuple = ()
    endpoints: int = 3
    idle_connections: int = 0
    notes: list = field(default_factory=list)

    def describe(self):
        if self.kind == "idle":
            return f"{self.idle_connections:,} idle keep-alive client connections (memory only)"
        return self.title


def all_scenarios(quick):
    """The scenarios; `quick` makes them small (CI proves that the script works)."""
    small = 16 if quick else 64
    return [
        Scenario(1, f"keep-alive GET /, small body, {small} connections", connections=small),
        Scenario(
            2,
            f"a new connection per request (Connection: close), {small} connections",
            connections=small,
            headers=("Connection: close",),
        ),
        Scenario(
            3, f"64 KiB responses (GET /bytes/65536), {small} connections",
            path="/bytes/65536", connections=small,
        ),
        Scenario(
            4,
            f"{200 if quick else 1000:,} concurrent keep-alive connections",
            connections=200 if quick else 1000,
        ),
        Scenario(
            5,
            f"{20 if quick else 100} endpoints, {small} connections",
            endpoints=20 if quick else 100,
            connections=small,
        ),
        Scenario(
            6,
            "idle client connections",
            kind="idle",
            idle_connections=1000 if quick else 10_000,
        ),
        Scenario(
            7,
            f"Compose deployment through its published port, {small} connections",
            kind="compose",
            connections=small,
        ),
    ]


class Runner:
    """Runs scenarios and collects `results[scenario id][balancer name] = [run, ...]`."""

    def __init__(self, opts, binaries, root, log=print):
        self.opts = opts
        self.binaries = binaries
        self.root = root
        self.log = log
        self.workers = opts.workers
        self.results = {}
        self.commands = {}

    # -- host scenarios (1-6) --------------------------------------------------------------

    def run_host(self, scenario, backends):
        """Loads (1-5) or fills with idle connections (6) the three balancers in front of
        `backends`. Under load each balancer runs through all rounds; for idle connections each
        round starts fresh balancers, because memory an allocator kept from the round before
        would count again."""
        if scenario.kind == "idle":
            for r in range(self.opts.rounds):
                with self._balancers(scenario, backends) as started:
                    self._idle_round(scenario, started, r)
        else:
            with self._balancers(scenario, backends) as started:
                self._wrk_rounds(scenario, started)

    @contextlib.contextmanager
    def _balancers(self, scenario, backends):
        """rondo, nginx and HAProxy started in front of `backends`, stopped on leaving."""
        started = []
        capacity = balancers.capacity(
            scenario.idle_connections if scenario.kind == "idle" else 2 * scenario.connections
        )
        try:
            for cls in balancers.ALL:
                if cls is balancers.Rondo:
                    b = cls(self.binaries["rondo"], backends.endpoints, self.workers, capacity)
                else:
                    b = cls(backends.endpoints, self.workers, capacity)
                started.append(b.start())
            yield started
        finally:
            for b in started:
                b.stop()

    def _warm_up(self, scenario, targets):
        for b in targets:
            wrk.run(
                b.url + scenario.path,
                scenario.connections,
                self.opts.warmup,
                headers=scenario.headers,
            )

    def _wrk_rounds(self, scenario, targets):
        self._warm_up(scenario, targets)
        runs = self.results.setdefault(scenario.id, {})
        for r in range(self.opts.rounds):
            for b in targets:
                pids = b.pids()
                sampler = procs.MemorySampler(b.root_pid).start()
                before = procs.cpu_ticks(pids)
                try:
                    fig = wrk.run(
                        b.url + scenario.path,
                        scenario.connections,
                        self.opts.duration,
                        headers=scenario.headers,
                    )
                finally:
                    peak = sampler.stop()
                after = procs.cpu_ticks(b.pids())
                cpu = procs.cpu_seconds_between(before, after)
                fig["cpu_us"] = cpu / max(fig["requests"], 1) * 1e6
                fig["rss_kib"] = peak
                fig["processes"] = len(pids)
                self.commands.setdefault(scenario.id, shlex.join(fig.pop("command")))
                runs.setdefault(b.name, []).append(fig)
                self.log(
                    f"  [{scenario.id}] round {r + 1}/{self.opts.rounds} {b.name:8} "
                    f"{fig['rps']:10,.0f} req/s  p50 {fig['p50_ms']:7.2f} ms  "
                    f"p99 {fig['p99_ms']:7.2f} ms  CPU {fig['cpu_us']:6.1f} µs/req  "
                    f"RSS {peak / 1024:6.1f} MiB  errors {fig['errors']}"
                )

    def _idle_round(self, scenario, targets, r):
        runs = self.results.setdefault(scenario.id, {})
        n = scenario.idle_connections
        for b in targets:
            pids = b.pids()
            base = procs.rss_kib(pids)
            started = time.monotonic()
            conns = idle.IdleConnections(b.port, n)
            try:
                opened = time.monotonic() - started
                pids = b.pids()
                rss = procs.rss_kib(pids)
                pss = procs.pss_kib(pids)
                still_open = conns.still_open()
            finally:
                conns.close()
            fig = {
                "base_kib": base,
                "rss_kib": rss,
                "pss_kib": pss,
                "open": still_open,
                "open_s": opened,
            }
            runs.setdefault(b.name, []).append(fig)
            self.log(
                f"  [{scenario.id}] round {r + 1}/{self.opts.rounds} {b.name:8} "
                f"RSS {base / 1024:6.1f} -> {rss / 1024:6.1f} MiB with {n:,} idle "
                f"connections (PSS {pss / 1024:.1f} MiB; opened in {opened:.1f} s, "
                f"{still_open:,} still open)"
            )
        self.commands.setdefault(
            scenario.id,
            f"(Python: {n:,} connections to 127.0.0.1, one GET / on each, then held idle)",
        )

    # -- scenario 7 --------------------------------------------------------------------------

    def run_compose(self, scenario):
        why = compose.available()
        if why:
            raise RuntimeError(f"scenario 7 needs Docker with Compose v2: {why}")
        deployments = [compose.rondo(self.root), compose.nginx(self.root)]
        try:
            for d in deployments:
                self.log(f"  [{scenario.id}] docker compose -p {d.project} up --build --wait")
                d.up()
            self._wrk_rounds(scenario, deployments)
        finally:
            for d in deployments:
                d.down()
