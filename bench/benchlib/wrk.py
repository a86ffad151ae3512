"""Runs wrk and reads what it printed: requests, requests/s, latency percentiles, errors."""

import re
import subprocess

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class WrkError(RuntimeError):
    pass


def _ms(text):
    """'1.23ms' -> 1.23, '850.00us' -> 0.85, '1.02s' -> 1020.0 (milliseconds)."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise WrkError(f"cannot read the latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(output):
    """The figures of one wrk run (with `--latency`): requests, seconds, rps, p50_ms, p99_ms,
    errors (socket errors plus non-2xx/3xx responses). Raises WrkError when a figure is
    missing, e.g. when wrk could not connect at all."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if not m:
        raise WrkError(f"wrk printed no request count:\n{output}")
    requests = int(m.group(1))
    seconds = _ms(m.group(2) + m.group(3)) / 1e3
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise WrkError(f"wrk printed no requests/s or latency distribution:\n{output}")
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return {
        "requests": requests,
        "seconds": seconds,
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "errors": errors,
    }


def command(url, connections, seconds, threads=2, headers=()):
    """The wrk command line for one run."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    # wrk's own timeout is 2s; a request slower than that counts as an error, not as latency.
    argv += ["--timeout", "10s", url]
    return argv


def run(url, connections, seconds, threads=2, headers=()):
    """Runs wrk against `url`; returns `parse` of its output plus the command."""
    argv = command(url, connections, seconds, threads, headers)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise WrkError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
    figures = parse(done.stdout)
    figures["command"] = argv
    return figures
