"""Where a cache hit's CPU goes under mod_wsgi: the bare relay's daemons and the gateway's, at the same request rate,
profiled side by side, and the gateway's extra CPU per request attributed so that the table adds up.

Both are served by mod_wsgi-express (2 processes x 15 threads) against the local fakes; each round sends the same
cache-hit request at a fixed rate (open loop) to one side, then the other. Per request and side it prints:

1. the daemons' CPU (user, system; every thread, from /proc/PID/task) and their context switches;
2. where that CPU went by code, from `perf record` (on-CPU samples of every thread, kernel included): the Python
   interpreter and its C modules, the kernel, libc, Apache/APR/mod_wsgi, OpenSSL;
3. the Python interpreter's share split by what it was running, from `py-spy record --gil` (the thread holding the
   GIL, sampled): the shares of its samples, scaled to the interpreter's CPU from (2), so the rows sum to it;
4. system calls per request, counted by `perf stat` on the syscall tracepoints, in a round of their own per side
   (counters on every thread slow every context switch, so these rounds time nothing); not strace, which stops at
   every call: the daemons then queued for the GIL, 100 futex calls a request where there are 3.

    /opt/lockllm-venv/bin/python benchmarks/hit_profile.py [--rate 200] [--seconds 8] [--rounds 2]

Needs root (perf and py-spy attach to Apache's www-data daemons); a missing tool leaves its tables out. The rows of
(3) are shares of samples: a row of n samples is known to about 1/sqrt(n), so its samples are printed beside it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import (
    CHAT_PATH,
    Served,
    Stack,
    chat_body,
    closed_loop,
    cpu_seconds,
    open_loop,
    table,
)

SIDES = ("relay", "gateway")
PERF_HZ = 999
SPY_HZ = 100
# Time for perf and py-spy to attach to every thread before the round's load starts (idle: it adds no CPU).
ATTACH_SECONDS = 1.0
# perf's shared objects, grouped by what runs there: the first pattern a DSO name matches names its group.
DSO_GROUPS = (
    ("Python interpreter and its C modules", re.compile(r"libpython|\.cpython-|^python")),
    ("kernel (system calls, scheduling, network)", re.compile(r"\[kernel")),
    ("libc (malloc, memcpy, futex wrappers)", re.compile(r"libc\.|ld-linux|\[vdso\]|libpthread")),
    ("Apache, APR, mod_wsgi C code", re.compile(r"apache2|libapr|mod_wsgi")),
    ("OpenSSL (sha256, random bytes)", re.compile(r"libcrypto|libssl")),
)
OTHER_DSO = "other shared objects"
# What the interpreter was running: the first rule with a function anywhere in the sampled stack names its row.
# Functions are matched as py-spy names them: "qualified name (file".
PY_RULES = (
    ("request log line (audit.log_request, logging)", ("log_request (", "log_event (")),
    ("metrics (Metrics.observe, prometheus_client)", ("Metrics.observe (",)),
    ("audit record (AuditLog.write)", ("AuditLog.write (",)),
    ("request record's fields (RequestRecord.fields)", ("RequestRecord.fields (",)),
    ("judging: extraction (format walk)", ("GatewayApp._extract (",)),
    ("judging: scan units (normalisation)", ("GatewayApp._scan_units (",)),
    ("judging: verdicts (memo lookup)", ("GatewayApp._scan (",)),
    ("judging: decision, verdict headers", ("decide (", "lockllm_headers (")),
    ("judging: the rest of _judge", ("GatewayApp._judge (",)),
    ("per-request policy and overrides", ("request_policy (", "request_action (", "request_scanner (")),
    ("body: read and JSON parse", ("read_json_request (", "read_body (")),
    ("upstream call (Relay.send: urllib3, http.client)", ("Relay.send (",)),
    ("request headers for upstream (request_headers)", ("request_headers (",)),
    ("answer passed through (iteration, close)", ("UpstreamBody.__iter__ (", "UpstreamBody.close (",
                                                  "_LoggedBody.__iter__ (")),
    ("routing, identity, request id", ("GatewayApp._route (", "client_identity (", "token_hex (",
                                       "RequestRecord.__init__ (", "OpsEndpoints.__call__ (")),
    ("app's own frames (GatewayApp / BareRelay bodies)", ("GatewayApp.", "BareRelay.", "_LoggedBody.")),
    ("mod_wsgi's Python handler (runtime.py)", ("ApplicationHandler.",)),
)
# A GIL-holding sample with no Python frame: mod_wsgi's C code working with the GIL held (the environ, the input
# and start_response objects), or the interpreter between frames.
NO_FRAME = "no Python frame (mod_wsgi's C code holding the GIL)"
OTHER_PY = "other Python (no rule matched; the script prints the largest)"


@dataclass
class Usage:
    """CPU seconds and context switches of a set of processes, every thread counted."""

    user: float = 0.0
    system: float = 0.0
    voluntary: int = 0
    involuntary: int = 0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.user - other.user, self.system - other.system, self.voluntary - other.voluntary,
                     self.involuntary - other.involuntary)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.user + other.user, self.system + other.system, self.voluntary + other.voluntary,
                     self.involuntary + other.involuntary)


def usage(pids: list[int]) -> Usage:
    total = Usage()
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                user, system = cpu_seconds(f"/proc/{pid}/task/{task}/stat")
                with open(f"/proc/{pid}/task/{task}/status") as status:
                    switches = dict(line.split(":", 1) for line in status if "ctxt_switches" in line)
            except OSError:  # a thread that ended meanwhile
                continue
            total = total + Usage(user, system, int(switches["voluntary_ctxt_switches"]),
                                  int(switches["nonvoluntary_ctxt_switches"]))
    return total


class Profilers:
    """perf and py-spy attached to a side's daemons for one round (or, with `syscalls`, perf counting system calls
    alone); stop() leaves their output in `folder`."""

    def __init__(self, tools: dict[str, str], pids: list[int], folder: str, tag: str, syscalls: bool = False):
        self.procs: list[subprocess.Popen] = []
        self.perf_data = os.path.join(folder, f"{tag}.perf")
        self.syscall_counts = os.path.join(folder, f"{tag}.syscalls")
        self.spy_files = [os.path.join(folder, f"{tag}-{pid}.spy") for pid in pids]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        targets = ",".join(map(str, pids))
        if syscalls:
            self.procs.append(subprocess.Popen([tools["perf"], "stat", "-e", "syscalls:sys_enter_*", "-x,", "-p",
                                                targets, "-o", self.syscall_counts], **quiet))
            return
        if "perf" in tools:
            self.procs.append(subprocess.Popen([tools["perf"], "record", "-F", str(PERF_HZ), "-p", targets,
                                                "-o", self.perf_data], **quiet))
        if "py-spy" in tools:
            for pid, out in zip(pids, self.spy_files):
                self.procs.append(subprocess.Popen([tools["py-spy"], "record", "--pid", str(pid), "--gil",
                                                    "--nonblocking", "--rate", str(SPY_HZ), "--format", "raw",
                                                    "-o", out], **quiet))

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(60)


def perf_samples(perf: str, data: str) -> Counter[str]:
    """Samples per DSO group in a perf.data file."""
    report = subprocess.run([perf, "report", "-i", data, "--stdio", "--sort", "dso", "-g", "none", "-n",
                             "--percent-limit", "0"], check=True, capture_output=True, text=True).stdout
    groups: Counter[str] = Counter()
    for line in report.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or line.startswith("#") or not parts[1].isdigit():
            continue
        dso = parts[2].strip()
        groups[next((name for name, pattern in DSO_GROUPS if pattern.search(dso)), OTHER_DSO)] += int(parts[1])
    return groups


def spy_samples(files: list[str], unmatched: Counter[str]) -> Counter[str]:
    """GIL-holding samples per PY_RULES row, from py-spy's raw (collapsed stack) files; stacks no rule matched are
    added to `unmatched`, by their three innermost frames."""
    rows: Counter[str] = Counter()
    for path in files:
        if not os.path.exists(path):
            continue
        with open(path) as raw:
            for line in raw:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not count.isdigit():
                    continue  # py-spy writes the odd line it could not finish
                row = NO_FRAME if not stack else next(
                    (name for name, functions in PY_RULES if any(function in stack for function in functions)),
                    OTHER_PY)
                rows[row] += int(count)
                if row == OTHER_PY:
                    unmatched[";".join(stack.split(";")[-3:])] += int(count)
    return rows


def syscall_calls(path: str) -> Counter[str]:
    """System calls by name from `perf stat -x,` on the syscall tracepoints."""
    calls: Counter[str] = Counter()
    if os.path.exists(path):
        with open(path) as counts:
            for line in counts:
                fields = line.split(",")
                if len(fields) > 2 and fields[0].isdigit() and fields[2].startswith("syscalls:sys_enter_"):
                    calls[fields[2].removeprefix("syscalls:sys_enter_")] += int(fields[0])
    return calls


def per_request(value: float, requests: int) -> float:
    return value * 1000 / max(1, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s sent to each side (default 200)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of a round (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="profiled rounds per side (default 2)")
    args = parser.parse_args()
    tools = {name: path for name in ("perf", "py-spy")
             if (path := shutil.which(name) or shutil.which(name, path="/opt/venv/bin"))}
    body = chat_body("What is the capital of France? Answer in one word.")
    count = int(args.rate * args.seconds)
    folder = tempfile.mkdtemp(prefix="hit-profile-")
    used = {side: Usage() for side in SIDES}
    served_requests = Counter[str]()
    dso = {side: Counter[str]() for side in SIDES}
    python = {side: Counter[str]() for side in SIDES}
    unmatched = {side: Counter[str]() for side in SIDES}
    calls = {side: Counter[str]() for side in SIDES}
    counted = Counter[str]()  # requests of the system call rounds
    print(f"open loop, {args.rate:g} requests/s for {args.seconds:g} s per round, {args.rounds} rounds per side, "
          f"cache hits, 2 x 15 each; tools: {', '.join(sorted(tools)) or 'none'}")
    with Stack() as stack:
        pair: dict[str, Served] = {side: stack.serve(side, "express") for side in SIDES}
        for served in pair.values():
            closed_loop(served.url + CHAT_PATH, lambda index: body, 16, 1.0)  # warm every process and thread
        for round_number in range(args.rounds):
            for side, served in pair.items():
                pids = served.daemon_pids()
                before = usage(pids)
                profilers = Profilers(tools, pids, folder, f"{side}{round_number}")
                time.sleep(ATTACH_SECONDS)
                answered = len(open_loop(served.url + CHAT_PATH, lambda index: body, args.rate, count, workers=32))
                used[side] = used[side] + (usage(pids) - before)
                profilers.stop()
                served_requests[side] += answered
                if "perf" in tools:
                    dso[side] += perf_samples(tools["perf"], profilers.perf_data)
                python[side] += spy_samples(profilers.spy_files, unmatched[side])
        for side, served in pair.items():
            if "perf" in tools:
                counting = Profilers(tools, served.daemon_pids(), folder, f"{side}-syscalls", syscalls=True)
                time.sleep(ATTACH_SECONDS)
                counted[side] = len(open_loop(served.url + CHAT_PATH, lambda index: body, args.rate, count, workers=32))
                counting.stop()
                calls[side] = syscall_calls(counting.syscall_counts)
    shutil.rmtree(folder, ignore_errors=True)

    def ms(side: str, seconds: float) -> float:
        return per_request(seconds, served_requests[side])

    rows = []
    for name, read in (("user CPU", lambda u: u.user), ("system CPU", lambda u: u.system),
                       ("total CPU", lambda u: u.user + u.system)):
        values = [ms(side, read(used[side])) for side in SIDES]
        rows.append([name + " ms", *(f"{value:.3f}" for value in values), f"{values[1] - values[0]:+.3f}"])
    for name, read in (("voluntary context switches", lambda u: u.voluntary),
                       ("involuntary context switches", lambda u: u.involuntary)):
        values = [read(used[side]) / max(1, served_requests[side]) for side in SIDES]
        rows.append([name, *(f"{value:.2f}" for value in values), f"{values[1] - values[0]:+.2f}"])
    print("\nThe daemons' CPU and context switches per request (/proc/PID/task/*)")
    print(table(["per request", "relay", "gateway", "gateway - relay"], rows))

    if "perf" in tools:
        perf_ms = {side: {group: ms(side, samples / PERF_HZ) for group, samples in dso[side].items()} for side in SIDES}
        groups = [name for name, _ in DSO_GROUPS] + [OTHER_DSO]
        rows = [[group, *(f"{perf_ms[side].get(group, 0.0):.3f}" for side in SIDES),
                 f"{perf_ms['gateway'].get(group, 0.0) - perf_ms['relay'].get(group, 0.0):+.3f}"] for group in groups]
        totals = [sum(perf_ms[side].values()) for side in SIDES]
        rows.append(["sum (perf's on-CPU samples)", *(f"{total:.3f}" for total in totals),
                     f"{totals[1] - totals[0]:+.3f}"])
        print(f"\nWhere the CPU went, ms per request (perf record -F {PERF_HZ}, every thread of the daemons)")
        print(table(["code", "relay", "gateway", "gateway - relay"], rows))
        interpreter = {side: perf_ms[side].get(DSO_GROUPS[0][0], 0.0) for side in SIDES}
        if all(python[side] for side in SIDES):
            scaled = {side: {row: interpreter[side] * samples / sum(python[side].values())
                             for row, samples in python[side].items()} for side in SIDES}
            names = [name for name, _ in PY_RULES] + [NO_FRAME, OTHER_PY]
            rows = [[name, *(f"{scaled[side].get(name, 0.0):.3f}" for side in SIDES),
                     f"{scaled['gateway'].get(name, 0.0) - scaled['relay'].get(name, 0.0):+.3f}",
                     " / ".join(str(python[side][name]) for side in SIDES)] for name in names]
            rows.append(["sum (= the interpreter's row above)", *(f"{interpreter[side]:.3f}" for side in SIDES),
                         f"{interpreter['gateway'] - interpreter['relay']:+.3f}",
                         " / ".join(str(sum(python[side].values())) for side in SIDES)])
            samples = ", ".join(f"{side} {sum(python[side].values())}" for side in SIDES)
            print(f"\nThe interpreter's CPU by what it ran, ms per request (py-spy --gil shares, {samples} samples, "
                  "scaled to perf's interpreter time)")
            print(table(["Python code", "relay", "gateway", "gateway - relay", "samples"], rows))
            for side in SIDES:
                for stack, samples in unmatched[side].most_common(3):
                    print(f"  {side}, {OTHER_PY.split(' (')[0]}: {samples} samples in ...{stack[-150:]}")

    if any(calls.values()):
        per = {side: {name: number / max(1, counted[side]) for name, number in calls[side].items()}
               for side in SIDES}
        names = sorted(set(per["relay"]) | set(per["gateway"]),
                       key=lambda name: -max(per["relay"].get(name, 0), per["gateway"].get(name, 0)))
        rows = [[name, *(f"{per[side].get(name, 0.0):.2f}" for side in SIDES),
                 f"{per['gateway'].get(name, 0.0) - per['relay'].get(name, 0.0):+.2f}"] for name in names
                if max(per["relay"].get(name, 0), per["gateway"].get(name, 0)) >= 0.05]
        rows.append(["all", *(f"{sum(per[side].values()):.2f}" for side in SIDES),
                     f"{sum(per['gateway'].values()) - sum(per['relay'].values()):+.2f}"])
        print("\nSystem calls per request (perf stat -e 'syscalls:sys_enter_*', one round per side of its own)")
        print(table(["system call", "relay", "gateway", "gateway - relay"], rows))


if __name__ == "__main__":
    main()
