#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""r3bench: the study's experiments with r3, one command, side by side with the
study's numbers (bench/study.csv), with gnuplot plots and a report.

The experiments are the EXPERIMENTS table below; each one runs engines (the
programs in bench/) and turns their CSV into rows of one tidy results.csv.
See bench/README.md for how to add an experiment."""

import csv
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

NAME = "r3bench"
VERSION = os.environ.get("R3BENCH_VERSION", "0.1.0")
HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("R3BENCH_SRCDIR", os.path.dirname(HERE))
BUILDDIR = os.environ.get("R3BENCH_BUILDDIR", os.path.join(SRCDIR, "_build"))
# A build tree has the engines in BUILDDIR/bench and the tools in BUILDDIR;
# an installation (make install) has them in $(pkglibexecdir) and $(bindir)
# and study.csv in $(pkgdatadir): the r3bench script says which.
ENGINES = os.environ.get("R3BENCH_ENGINES", os.path.join(BUILDDIR, "bench"))
TOOLS = os.environ.get("R3BENCH_TOOLS", BUILDDIR)
DATA = os.environ.get("R3BENCH_DATA", os.path.join(SRCDIR, "bench"))
HEADER = ["experiment", "strategy", "source", "transport", "rtt_ms", "workers", "chunk", "size",
          "metric", "value", "unit", "run"]

USAGE = """\
Usage: r3bench list
       r3bench run [EXPERIMENT...] [--quick|--full|--smoke] [--out DIR] [--runs N]
                   [--quiet] [--rtt-mode delay|proxy]
       r3bench plot DIR
       r3bench report DIR
The study's experiments with r3, side by side with the study's numbers.
  list                 the experiments, each with the study figure it reproduces
  run                  run the named experiments (number or name; default all), then
                       plot and report; servers are started on free loopback ports
      --quick          sizes and runs that finish in about 10 minutes on 2 cores (default)
      --full           the study's sizes and run counts (takes hours)
      --smoke          the smallest sizes and one run (about a minute)
      --out DIR        where results.csv, meta.json, plots and report.md go
                       (default r3bench-YYYYmmdd-HHMMSS)
      --runs N         repetitions of each measurement (default: 1 smoke, 3 quick, 10 full)
      --quiet          no progress lines
      --rtt-mode MODE  delay: a delay stage on every source request (the study's way;
                       default); proxy: network transports and sources (experiments
                       8 and 9, the ones `list` marks) go through a delaying loopback
                       TCP proxy, so latency also hits the wire, TLS and the
                       connection pool; the others keep the delay stage
  plot DIR             draw DIR/<experiment>.svg and .png from DIR/results.csv (gnuplot)
  report DIR           write DIR/report.md from DIR/results.csv and bench/study.csv
  -h, --help           this text
  -V, --version        the version
Exit status: 0 done (skipped experiments included), 1 an experiment failed, 2 usage error.
"""


def usage_error(what):
    sys.stderr.write("%s: %s\nTry '%s --help' for more information.\n" % (NAME, what, NAME))
    sys.exit(2)


# ---------------------------------------------------------------- modes

MODES = {
    "smoke": dict(runs=1, size="4M", chunking_size="1M", lat_samples=3, rtts=[0, 2], workers=[1, 16],
                  sources=["mem", "file", "dir", "r3", "s3"], sources_rtt=["mem", "r3", "nbd"],
                  sources_samples=2,
                  pull=8, chunks=["4K", "64K", "1M"], dirty_sizes=["16M", "64M"],
                  fs_size="8M", fs_shares=[1, 10], fio_seconds="500ms", nbd_rounds=1, peer_seconds=1, fio_size="16M", src_size="4M", wire_size="8M",
                  pipe_size="16M", open_workers=[1, 16], mig_size="32M", mig_shares=[10],
                  mig_rtts=[0], budget=60),
    # quick: every experiment within 10 minutes in all on 2 shared cores (the
    # caps keep one or two runs where one run already holds many samples)
    "quick": dict(runs=3, size="16M", lat_samples=25, lat_rtt_samples=6, rtts=[0, 10, 20, 40],
                  workers=[1, 4, 16, 64, 256, 1024, 4096, 16384], pull=16,
                  chunks=["4K", "16K", "64K", "256K", "1M", "4M"],
                  dirty_sizes=["64M", "256M", "1G"], fs_size="64M", fs_shares=[0.1, 1, 10, 50], cap_delta_sync=2,
                  fio_seconds=2, nbd_rounds=1, peer_seconds=2, fio_size="128M", src_size="16M", wire_size="16M", pipe_size="128M",
                  open_workers=[1, 4, 16, 64, 256], chunking_size="2M", chunking_rtts=[0, 10, 20],
                  cap_transports=1, cap_sources=1, sources_rtts=[0, 10], sources_samples=2,
                  sources_rtt_size="4M", rtt_size="16M", cap_read_rtt=2, cap_write_rtt=2,
                  cap_chunking=2, cap_pull_workers=1, cap_nbd_server=1,
                  rtt_chunk="256K", rtt_pull=64, mig_size="128M", mig_shares=[0, 1, 10, 50, 100],
                  mig_rtts=[0, 10], cap_migration=1, budget=600),
    "full": dict(runs=10, size="256M", rtt_size="1G", rtt_chunk="1M", rtt_pull=64, lat_samples=100, rtts=[0, 5, 10, 15, 20, 25, 30, 35, 40],
                 workers=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384], pull=64,
                 chunks=["4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M", "4M"],
                 dirty_sizes=["64M", "256M", "1G", "4G"], fs_size="1G",
                 fs_shares=[0.1, 0.5, 1, 2, 5, 10, 25, 50, 100], fio_seconds=10,
                 fio_size="1G", src_size="1G", wire_size="1G", pipe_size="1G",
                 open_workers=[1, 4, 16, 64, 256, 1024, 4096], mig_size="1G",
                 mig_shares=[0, 1, 10, 50, 100], mig_rtts=[0, 10], budget=4 * 3600),
}


def size_bytes(s):
    s = str(s)
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s and s[-1].upper() in mult:
        return int(s[:-1]) * mult[s[-1].upper()]
    return int(s)


# ---------------------------------------------------------------- helpers

def which(prog):
    return shutil.which(prog)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def median(v):
    v = sorted(v)
    n = len(v)
    if not n:
        return float("nan")
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(math.ceil(p / 100.0 * len(v))) - 1))
    return v[k]


def fmt(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    ax = abs(x)
    if ax >= 1000:
        return "%.0f" % x
    if ax >= 100:
        return "%.1f" % x
    if ax >= 1:
        return "%.2f" % x
    return "%.3g" % x


class EngineError(Exception):
    pass


class Servers:
    """Every process r3bench starts; stopped by pid, always."""

    def __init__(self, tmp):
        self.procs = []
        self.tmp = tmp

    def start(self, argv, port, env=None, timeout=30.0):
        log = open(os.path.join(self.tmp, "server-%d.log" % port), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        if not wait_port(port, timeout):
            raise EngineError("%s did not listen on port %d" % (os.path.basename(argv[0]), port))
        return p

    def stop(self, p=None):
        procs = [p] if p else list(self.procs)
        for q in procs:
            if q.poll() is None:
                q.terminate()
        for q in procs:
            try:
                q.wait(timeout=10)
            except subprocess.TimeoutExpired:
                q.kill()
                q.wait()
            if q in self.procs:
                self.procs.remove(q)


class Ctx:
    def __init__(self, out, mode, runs, rtt_mode, quiet):
        self.out = out
        self.mode = mode
        self.m = dict(MODES[mode])
        self.runs = runs or self.m["runs"]
        self.runs_given = runs is not None
        self.rtt_mode = rtt_mode
        self.quiet = quiet
        self.rows = []
        self.notes = {}
        self.problems = {}
        self.tmp = tempfile.mkdtemp(prefix="r3bench.")
        self.servers = Servers(self.tmp)
        self.exp = None
        self.points = 0
        self.done = 0
        self.t_exp = 0
        self.last_line = 0
        self.tls = None

    def runs_for(self, exp):
        """Runs of one experiment: --runs if given, else the mode's, capped per
        experiment where one run already holds many samples."""
        if self.runs_given:
            return self.runs
        return min(self.runs, self.m.get("cap_" + exp, self.runs))

    # -- results
    def add(self, strategy="", source="", transport="", rtt_ms="", workers="", chunk="", size="",
            metric="", value=None, unit="", run=0):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        self.rows.append([self.exp.name, strategy, source, transport, rtt_ms, workers, chunk,
                          size, metric, "%.6g" % float(value), unit, run])

    def note(self, text):
        self.notes.setdefault(self.exp.name, []).append(text)

    def problem(self, text):
        """A part of the experiment went wrong: its rows are left out, the rest stands."""
        self.problems.setdefault(self.exp.name, []).append(text)

    # -- progress
    def begin(self, points):
        self.points = max(1, points)
        self.done = 0
        self.t_exp = time.time()
        self.progress()

    def step(self, n=1):
        self.done += n
        self.progress()

    def progress(self):
        """One line per experiment: rewritten in place on a terminal, else
        printed at the start and at most every 15 s."""
        if self.quiet:
            return
        now = time.time()
        el = now - self.t_exp
        tty = sys.stderr.isatty()
        if not tty and self.done and now - self.last_line < 15:
            return
        self.last_line = now
        eta = "?" if not self.done else "%ds" % int(el / self.done * (self.points - self.done))
        line = "%s: [%s/%d] %s: %d/%d points, %ds elapsed, ETA %s" % (
            NAME, self.exp.num, len(EXPERIMENTS), self.exp.name, self.done, self.points, int(el), eta)
        sys.stderr.write(("\r\033[K" + line) if tty else line + "\n")
        sys.stderr.flush()

    def end_line(self, text):
        if self.quiet:
            return
        line = "%s: [%d/%d] %s: %s" % (NAME, self.exp.num, len(EXPERIMENTS), self.exp.name, text)
        sys.stderr.write(("\r\033[K" + line + "\n") if sys.stderr.isatty() else line + "\n")
        sys.stderr.flush()

    # -- engines
    def engine(self, name):
        p = os.path.join(ENGINES, name)
        if not os.access(p, os.X_OK):
            raise EngineError("engine %s is not built (make in %s)" % (p, BUILDDIR))
        return p

    def tool(self, name):
        p = os.path.join(TOOLS, name)
        if not os.access(p, os.X_OK):
            raise EngineError("%s is not built" % p)
        return p

    def run_csv(self, argv, timeout=600, env=None, header_prefix=None):
        """Run an engine, return its CSV rows as dicts (lines starting with # dropped)."""
        # its own process group: on a timeout the engine and every server it
        # started (nbd.sh starts several) are stopped together
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.communicate(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            raise EngineError("%s timed out after %ds" % (os.path.basename(argv[0]), timeout))
        except BaseException:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            p.wait()
            raise
        lines = [l for l in out.splitlines() if l and not l.startswith("#")]
        if p.returncode != 0:
            err = (err.strip().splitlines() or ["exit %d" % p.returncode])[-1]
            raise EngineError("%s: %s" % (os.path.basename(argv[0]), err))
        if header_prefix:
            while lines and not lines[0].startswith(header_prefix):
                lines.pop(0)
        return list(csv.DictReader(lines))

    def region(self, strategy, metric_set, size=None, chunk="64K", rtt_ms=0, pull=0, push=1,
               samples=1, source=None, extra=(), timeout=900):
        argv = [self.engine("r3bench_region"), "--strategy", strat_name(strategy), "--size",
                str(size or self.m["size"]), "--chunk", chunk, "--rtt-us", str(int(rtt_ms * 1000)),
                "--pull", str(pull), "--push", str(push), "--samples", str(samples),
                "--measure", metric_set, "--workdir", self.tmp] + list(extra)
        if source:
            argv += ["--source", source]
        return self.run_csv(argv, timeout=timeout)

    def certs(self):
        if self.tls:
            return self.tls
        if not which("openssl"):
            raise EngineError("openssl is missing")
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        self.tls = (cert, key)
        return self.tls

    def proxy(self, port, rtt_ms):
        """A delaying TCP proxy in front of 127.0.0.1:port; returns its port."""
        lp = free_port()
        self.servers.start([sys.executable, os.path.join(HERE, "r3bench_proxy.py"), str(lp),
                            str(port), str(rtt_ms)], lp)
        return lp


# ---------------------------------------------------------------- experiments

class Exp:
    """peer: (r3's strategy, the peer's strategy) measured in the same run;
    the report puts their ratio beside each other."""

    def __init__(self, num, name, title, figure, run=None, plot=None, needs=(), status=None, peer=None,
                 rtt=None):
        self.num, self.name, self.title, self.figure = num, name, title, figure
        self.fn, self.plot, self.needs, self.status, self.peer = run, plot or {}, needs, status, peer
        # rtt: how this experiment injects RTT: None (it has none), "delay" (the
        # delay stage or the engine's own delay, whatever --rtt-mode says), or
        # "delay,proxy" (--rtt-mode proxy puts a delaying TCP proxy in front of
        # its network servers instead)
        self.rtt = rtt


STRATS = ["uffd", "nbd-direct", "nbd-managed", "filesync"]


def pull_for(ctx, s):
    """Pull workers per strategy: the managed ones pull; uffd is the study's
    uffd (no pull) unless named "uffd+pull"; baselines have none."""
    return ctx.m["pull"] if s in ("nbd-managed", "filesync", "uffd+pull") else 0


def strat_name(s):
    return "uffd" if s == "uffd+pull" else s


def emit_region(ctx, rows, strategy, run, **kw):
    """Region engine rows; the engine's sample number is the run."""
    for r in rows:
        ctx.add(strategy=strategy, metric=r["metric"], value=float(r["value"]), unit=r["unit"],
                run=run + int(r["sample"]), **kw)


def exp_first_chunk(ctx):
    strats = ["mem", "file"] + STRATS
    ctx.begin(len(strats))
    for s in strats:
        rows = ctx.region(s, "latency", samples=ctx.m["lat_samples"], pull=pull_for(ctx, s))
        emit_region(ctx, rows, s, 0, source="mem" if s not in ("mem", "file") else "",
                    rtt_ms=0, workers=pull_for(ctx, s), chunk=65536, size=size_bytes(ctx.m["size"]))
        ctx.step()


def exp_latency_rtt(ctx):
    ctx.begin(len(STRATS) * len(ctx.m["rtts"]))
    n = ctx.m.get("lat_rtt_samples", ctx.m["lat_samples"])
    for rtt in ctx.m["rtts"]:
        for s in STRATS:
            rows = ctx.region(s, "latency", samples=n, rtt_ms=rtt, pull=pull_for(ctx, s))
            emit_region(ctx, rows, s, 0, source="mem", transport="delay", rtt_ms=rtt,
                        workers=pull_for(ctx, s), chunk=65536, size=size_bytes(ctx.m["size"]))
            ctx.step()


def exp_read0(ctx):
    strats = ["mem", "file"] + STRATS + ["uffd+pull"]
    ctx.begin(len(strats))
    for s in strats:
        rows = ctx.region(s, "read", samples=ctx.runs, pull=pull_for(ctx, s))
        emit_region(ctx, rows, s, 0, source="mem" if s not in ("mem", "file") else "", rtt_ms=0,
                    workers=pull_for(ctx, s), chunk=65536, size=size_bytes(ctx.m["size"]))
        ctx.step()


def exp_read_rtt(ctx):
    strats = STRATS + ["uffd+pull"]
    size, chunk, pull = ctx.m.get("rtt_size", ctx.m["size"]), ctx.m.get("rtt_chunk", "64K"), \
        ctx.m.get("rtt_pull", ctx.m["pull"])
    ctx.note("region %s, chunk %s, %d pull workers for the managed strategies" % (size, chunk, pull))
    ctx.begin(len(strats) * len(ctx.m["rtts"]))
    for rtt in ctx.m["rtts"]:
        for s in strats:
            w = pull if pull_for(ctx, s) else 0
            rows = ctx.region(s, "read", size=size, chunk=chunk, samples=ctx.runs_for("read_rtt"),
                              rtt_ms=rtt, pull=w)
            emit_region(ctx, rows, s, 0, source="mem", transport="delay", rtt_ms=rtt,
                        workers=w, chunk=size_bytes(chunk), size=size_bytes(size))
            ctx.step()


def exp_write_rtt(ctx):
    """Writes of the whole region, then sync: direct (every write goes to the
    remote), managed and uffd (pull + push workers, written back at sync)."""
    size, chunk, pull = ctx.m.get("rtt_size", ctx.m["size"]), ctx.m.get("rtt_chunk", "64K"), \
        ctx.m.get("rtt_pull", ctx.m["pull"])
    strats = [("nbd-direct", 0, 1), ("nbd-managed", pull, 16), ("uffd", pull, 16)]
    ctx.note("region %s, chunk %s; nbd-managed and uffd: %d pull and 16 push workers" % (size, chunk, pull))
    ctx.begin(len(strats) * len(ctx.m["rtts"]))
    for rtt in ctx.m["rtts"]:
        for s, w, push in strats:
            rows = ctx.region(s, "write", size=size, chunk=chunk, samples=ctx.runs_for("write_rtt"),
                              rtt_ms=rtt, pull=w,
                              push=push)
            emit_region(ctx, rows, s, 0, source="mem", transport="delay", rtt_ms=rtt,
                        workers=push, chunk=size_bytes(chunk), size=size_bytes(size))
            ctx.step()


def exp_open(ctx):
    strats = ["mem", "file"] + STRATS
    ws = ctx.m["open_workers"]
    ctx.begin(len(strats) + len(ws))
    for s in strats:
        rows = ctx.region(s, "open", samples=ctx.runs, pull=pull_for(ctx, s))
        emit_region(ctx, [r for r in rows if r["metric"] != "pulled_at_open"], s, 0,
                    source="mem" if s not in ("mem", "file") else "", rtt_ms=0,
                    workers=pull_for(ctx, s), chunk=65536, size=size_bytes(ctx.m["size"]))
        ctx.step()
    for w in ws:   # the study's preemptive pull: what is local when open returns, at 7 ms
        rows = ctx.region("nbd-managed", "open", samples=ctx.runs, rtt_ms=7, pull=w)
        emit_region(ctx, rows, "nbd-managed", 0, source="mem", transport="delay", rtt_ms=7,
                    workers=w, chunk=65536, size=size_bytes(ctx.m["size"]))
        ctx.step()


def exp_chunking(ctx):
    combos = [(s, side) for s in ("nbd-direct", "nbd-managed") for side in ("server", "client")]
    rtts = ctx.m.get("chunking_rtts", ctx.m["rtts"])
    size = ctx.m.get("chunking_size", ctx.m["size"])
    ctx.note("a 4 KiB chunk stage below (server) or above (client) the delay; region chunk 64 KiB; "
             "region of %s, RTTs %s ms (client-side chunking pays one RTT per 4 KiB)" %
             (size, ", ".join(map(str, rtts))))
    ctx.begin(len(combos) * len(rtts))
    for rtt in rtts:
        for s, side in combos:
            rows = ctx.region(s, "read", size=size, samples=ctx.runs_for("chunking"), rtt_ms=rtt,
                              pull=pull_for(ctx, s),
                              extra=["--split", "4K", "--split-at", side])
            emit_region(ctx, rows, s, 0, source="mem", transport="chunk-" + side, rtt_ms=rtt,
                        workers=pull_for(ctx, s), chunk=4096, size=size_bytes(size))
            ctx.step()


def start_r3serve(ctx, size, delay_us, tls):
    lp, np_ = free_port(), free_port()
    argv = [ctx.tool("r3serve"), "--listen", "127.0.0.1:%d" % lp, "--source",
            "mem:?size=%s" % size, "--workers", "16"]
    if not tls:
        argv += ["--nbd", "127.0.0.1:%d" % np_]
    else:
        cert, key = ctx.certs()
        argv += ["--tls-cert", cert, "--tls-key", key]
    if delay_us:
        argv += ["--delay-us", str(delay_us)]
    p = ctx.servers.start(argv, lp)
    if not tls and not wait_port(np_):
        raise EngineError("r3serve did not listen for NBD on %d" % np_)
    return p, lp, np_


def exp_transports(ctx):
    size = ctx.m["wire_size"]
    ctx.begin(len(ctx.m["rtts"]))
    for rtt in ctx.m["rtts"]:
        proxy = ctx.rtt_mode == "proxy"
        delay_us = 0 if proxy else rtt * 1000
        p1, lp, np_ = start_r3serve(ctx, size, delay_us, False)
        p2, tp, _ = start_r3serve(ctx, size, delay_us, True)
        if proxy and rtt:
            lp, np_, tp = ctx.proxy(lp, rtt), ctx.proxy(np_, rtt), ctx.proxy(tp, rtt)
        cert = ctx.certs()[0]
        uris = {"r3": "r3://127.0.0.1:%d/bench?conns=4" % lp,
                "r3s": "r3s://127.0.0.1:%d/bench?conns=4&ca=%s" % (tp, cert),
                "nbd": "nbd://127.0.0.1:%d/" % np_}
        for run in range(ctx.runs_for("transports")):
            for mode, flag in (("direct", []), ("managed", ["-P"])):
                for t, uri in uris.items():
                    rows = ctx.run_csv([ctx.engine("wire"), "-c", "1M", "-w", "16", "-t", size] + flag
                                       + [uri], timeout=600)
                    for r in rows:
                        kw = dict(strategy=mode, source="mem", transport=t + ("+proxy" if proxy and rtt else ""),
                                  rtt_ms=rtt, workers=16, chunk=int(r["chunk"]), size=int(r["bytes"]),
                                  run=run)
                        ctx.add(metric="read_throughput", value=float(r["MBps"]), unit="MB/s", **kw)
                        ctx.add(metric="first_chunk_latency", value=float(r["chunk_latency_median_us"]),
                                unit="us", **kw)
        ctx.servers.stop()
        ctx.step()


def exp_sources(ctx):
    want = ctx.m.get("sources", ["mem", "file", "dir", "r3", "r3s", "redis", "cluster", "s3"])
    left = [x for x in ["mem", "file", "dir", "r3", "r3s", "redis", "cluster", "s3"] if x not in want]
    if left:
        ctx.note("left out in --%s mode to keep it short: %s" % (ctx.mode, ", ".join(left)))
    only = [x for x in ["mem", "file", "dir", "r3", "r3s"] if x in want]
    missing = []
    for src, progs in (("redis", ["redis-server"]), ("cluster", ["redis-server", "redis-cli"]),
                       ("s3", ["s3rver"])):
        if src not in want:
            continue
        if all(which(p) for p in progs):
            only.append(src)
        else:
            missing.append("%s (%s missing)" % (src, "/".join(p for p in progs if not which(p))))
    if missing:
        ctx.note("skipped sources: " + ", ".join(missing))
    ctx.note("strategies direct and managed at 0 ms: bench/sources (direct reads from the source by "
             "16 threads; cache+pull); nbd-direct and nbd-managed against RTT: regions over the same "
             "sources (and nbd:// to nbdkit memory) through bench/r3bench_region")
    runs = ctx.runs_for("sources")
    ctx.begin(runs)
    for run in range(runs):
        rows = ctx.run_csv([ctx.engine("sources"), "--size", ctx.m["src_size"], "--chunks", "1M",
                            "--workers", "16", "--samples", str(min(100, ctx.m["lat_samples"] * 10)),
                            "--only", ",".join(only), "--r3serve", ctx.tool("r3serve"),
                            "--peer-seconds", str(ctx.m.get("peer_seconds", 5))],
                           timeout=1800, header_prefix="source,")
        for r in rows:
            base = dict(source=r["source"], transport="", rtt_ms=0, workers=int(r["workers"]),
                        chunk=int(r["chunk_bytes"]), size=int(r["bytes"]), run=run)
            ctx.add(strategy="managed", metric="read_throughput", value=float(r["seq_read_mb_s"]),
                    unit="MB/s", **base)
            ctx.add(strategy="direct", metric="read_throughput", value=float(r["direct_read_mb_s"]),
                    unit="MB/s", **base)
            ctx.add(strategy="managed", metric="first_chunk_latency",
                    value=float(r["first_chunk_median_us"]), unit="us", **base)
            ctx.add(strategy="direct", metric="first_chunk_latency",
                    value=float(r["direct_chunk_median_us"]), unit="us", **base)
        ctx.step()
    exp_sources_rtt(ctx)


def start_source_servers(ctx, which_, size, chunk):
    """Start the server behind each source of which_; returns {name: (uri, port or None)}.
    A source whose server cannot start is left out with a note."""
    t = ctx.tmp
    out = {}
    for name in which_:
        try:
            if name == "mem":
                out[name] = ("mem:?size=%s" % size, None)
            elif name == "file":
                out[name] = ("file://%s/src.img?size=%s" % (t, size), None)
            elif name == "dir":
                out[name] = ("dir://%s/srcdir?size=%s&chunk=%s" % (t, size, chunk), None)
            elif name == "redis":
                p = free_port()
                d = os.path.join(t, "redis%d" % p)
                os.makedirs(d, exist_ok=True)
                ctx.servers.start(["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", d], p)
                out[name] = ("redis://127.0.0.1:%d/b?size=%s&chunk=%s&conns=16" % (p, size, chunk), p)
            elif name == "redis-cluster":
                ports = []
                for _ in range(3):
                    p, bus = free_port(), free_port()
                    d = os.path.join(t, "cl%d" % p)
                    os.makedirs(d, exist_ok=True)
                    ctx.servers.start(["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", d, "--cluster-enabled", "yes",
                                       "--cluster-port", str(bus), "--cluster-config-file",
                                       os.path.join(d, "nodes.conf")], p)
                    ports.append(p)
                subprocess.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % p for p in ports] +
                               ["--cluster-replicas", "0", "--cluster-yes"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60, check=True)
                for _ in range(200):
                    ok = all(b"cluster_state:ok" in subprocess.run(
                        ["redis-cli", "-p", str(p), "CLUSTER", "INFO"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, timeout=10).stdout for p in ports)
                    if ok:
                        break
                    time.sleep(0.1)
                else:
                    raise EngineError("the Redis Cluster did not come up")
                out[name] = ("redis://127.0.0.1:%d/b?size=%s&chunk=%s&conns=16&cluster=1" %
                             (ports[0], size, chunk), None)    # redirects name real ports: no proxy
            elif name == "s3":
                p = free_port()
                d = os.path.join(t, "s3")
                os.makedirs(d, exist_ok=True)
                ctx.servers.start(["s3rver", "-d", d, "-a", "127.0.0.1", "-p", str(p), "-s",
                                   "--configure-bucket", "bench"], p)
                os.environ.setdefault("AWS_ACCESS_KEY_ID", "S3RVER")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "S3RVER")
                out[name] = ("s3://bench/b?endpoint=http://127.0.0.1:%d&size=%s&chunk=%s&conns=16" %
                             (p, size, chunk), p)
            elif name in ("r3", "r3s"):
                _, lp, _ = start_r3serve(ctx, size, 0, name == "r3s")
                q = "&ca=%s" % ctx.certs()[0] if name == "r3s" else ""
                out[name] = ("%s://127.0.0.1:%d/bench?conns=4%s" % (name, lp, q), lp)
            elif name == "nbd":
                p = free_port()
                ctx.servers.start(["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(p), "memory", size], p)
                out[name] = ("nbd://127.0.0.1:%d/" % p, p)
        except (EngineError, OSError, subprocess.SubprocessError) as x:
            ctx.note("%s left out of the RTT sweep: %s" % (name, x))
    return out


def exp_sources_rtt(ctx):
    """Part two of experiment 9: every source as a region (nbd-direct and
    nbd-managed) against RTT, through the region engine."""
    names = ctx.m.get("sources_rtt", ["mem", "file", "dir", "redis", "redis-cluster", "s3", "r3", "r3s",
                                      "nbd"])
    need = {"redis": ["redis-server"], "redis-cluster": ["redis-server", "redis-cli"], "s3": ["s3rver"],
            "nbd": ["nbdkit"]}
    names = [n for n in names if all(which(p) for p in need.get(n, []))]
    size, rtts = ctx.m.get("sources_rtt_size", ctx.m["size"]), ctx.m.get("sources_rtts", ctx.m["rtts"])
    srv = start_source_servers(ctx, names, size, "64K")
    ctx.points += len(srv) * len(rtts) * 2
    ctx.progress()
    try:
        for name, (uri, port) in srv.items():
            for rtt in rtts:
                proxied = ctx.rtt_mode == "proxy" and port is not None and rtt > 0
                u = uri.replace("127.0.0.1:%d" % port, "127.0.0.1:%d" % ctx.proxy(port, rtt)) \
                    if proxied else uri
                for s in ("nbd-direct", "nbd-managed"):
                    rows = ctx.region(s, "latency", source=u, rtt_ms=0 if proxied else rtt,
                                      pull=pull_for(ctx, s), samples=ctx.m.get("sources_samples", 5))
                    rows += ctx.region(s, "read", source=u, rtt_ms=0 if proxied else rtt,
                                       pull=pull_for(ctx, s), samples=ctx.runs_for("sources"))
                    for r in rows:
                        ctx.add(strategy=s, source=name, transport="proxy" if proxied else "delay",
                                rtt_ms=rtt, workers=pull_for(ctx, s), chunk=65536, size=size_bytes(size),
                                metric=r["metric"], value=float(r["value"]), unit=r["unit"],
                                run=int(r["sample"]))
                    ctx.step()
    finally:
        ctx.servers.stop()


def exp_pull_workers(ctx):
    ws = ctx.m["workers"]
    ctx.note("pull workers %d to %d; 1 MiB chunks; region %s" % (ws[0], ws[-1], ctx.m["pipe_size"]))
    runs = ctx.runs_for("pull_workers")
    ctx.begin(len(ws) * runs)
    for run in range(runs):
        for w in ws:
            rows = ctx.run_csv([ctx.engine("pipeline"), "--size", ctx.m["pipe_size"], "--chunk", "1M",
                                "--workers", str(w), "--rtt-ms", "0,30"], timeout=900)
            for r in rows:
                ctx.add(strategy="cache+pull", source="mem", transport="delay", rtt_ms=int(r["rtt_ms"]),
                        workers=w, chunk=int(r["chunk_bytes"]), size=int(r["bytes"]),
                        metric="read_throughput", value=float(r["mb_per_s"]), unit="MB/s", run=run)
            ctx.step()


def exp_uffd_chunk(ctx):
    chunks = ctx.m["chunks"]
    ctx.begin(len(chunks) + 1)
    for c in chunks:
        rows = ctx.region("uffd", "latency,read", chunk=c, samples=ctx.runs, extra=["--no-prefetch"])
        emit_region(ctx, rows, "uffd", 0, source="mem", rtt_ms=0, workers=0, chunk=size_bytes(c),
                    size=size_bytes(ctx.m["size"]))
        ctx.step()
    for run in range(ctx.runs):
        rows = ctx.run_csv([ctx.engine("uffd"), "--size", ctx.m["size"], "--only", "seq_read,first_chunk"],
                           timeout=600)
        for r in rows:
            if r["impl"] != "min4k":
                continue
            metric = {"seq_read": "read_throughput", "first_chunk_us": "first_chunk_latency"}.get(
                r["experiment"])
            if metric:
                ctx.add(strategy="min4k", source="mem", rtt_ms=0, workers=0, chunk=int(r["chunk"]),
                        size=int(r["size"]), metric=metric, value=float(r["value"]), unit=r["unit"],
                        run=run)
    ctx.step()


def exp_dirty(ctx):
    sizes = ctx.m["dirty_sizes"]
    ctx.begin(len(sizes) * ctx.runs)
    for run in range(ctx.runs):
        for sz in sizes:
            rows = ctx.run_csv([ctx.engine("uffd"), "--size", sz, "--only", "dirty"], timeout=600)
            for r in rows:
                m = {"dirty_scan_ms": "find_written", "hash_ms": "find_written"}.get(r["experiment"])
                if not m:
                    continue
                strat = "pagemap_scan" if r["impl"] == "uffd-pagemap_scan" else \
                    ("xxh3_hash" if r["impl"] == "xxh3" else r["impl"])
                ctx.add(strategy=strat, source="mem", rtt_ms=0, chunk=int(r["chunk"]), size=int(r["size"]),
                        metric=m, value=float(r["value"]), unit="ms", run=run)
            ctx.step()


def exp_delta_sync(ctx):
    """bench/filesync: one mapping, one sync round per share of 4 KiB pages
    written at random; r3sync, rsync (default blocks) and rsync -B 4096 sync
    the same change set. The share goes in the `source` column (percent)."""
    shares = ctx.m["fs_shares"]
    ctx.note("mapping %s; `source` is the share of 4 KiB pages written at random before the round (%%); "
             "rsync runs --ignore-times --inplace --no-whole-file to a local daemon; detection: 1%% of pages"
             % ctx.m["fs_size"])
    runs = ctx.runs_for("delta_sync")
    ctx.begin(runs)
    for run in range(runs):
        rows = ctx.run_csv([ctx.engine("filesync"), "--size", ctx.m["fs_size"], "--r3sync",
                            ctx.tool("r3sync"), "--dir", ctx.tmp, "--share", ",".join("%g" % x for x in shares)],
                           timeout=900, header_prefix="part,")
        vals = {(r["what"], r["share"]): r for r in rows}
        size = int(float(vals[("size", "")]["value"])) if ("size", "") in vals else ""
        for share in ("%g" % x for x in shares):
            for what, strat in (("r3sync_4k", "r3sync"), ("rsync_default", "rsync"),
                                ("rsync_B4096", "rsync -B 4096")):
                r = vals.get((what, share))
                if not r or not r["value"]:
                    ctx.problem("run %d, %s%%: no %s row from bench/filesync" % (run, share, strat))
                    continue
                if "DIFFERS" in r.get("note", "") or "failed" in r.get("note", ""):
                    ctx.problem("run %d, %s%%: %s left out: the engine says \"%s\"" %
                                (run, share, strat, r["note"].strip()))
                    continue
                kw = dict(strategy=strat, source=share, transport="tcp", rtt_ms=0, chunk=4096,
                          size=size, run=run)
                ctx.add(metric="sync_time", value=float(r["value"]) * 1e3, unit="ms", **kw)
                b = vals.get((what + "_bytes", share))
                if b and b["value"]:
                    ctx.add(metric="wire_bytes", value=float(b["value"]), unit="bytes", **kw)
        for what in ("hash_4k_2threads", "pagemap_scan"):
            r = vals.get((what, "1"))
            if r and r["value"]:
                ctx.add(strategy=what, source="1", rtt_ms=0, chunk=4096, size=size,
                        metric="detect_time", value=float(r["value"]), unit="ms", run=run)
        ctx.step()


def exp_migration(ctx):
    """bench/migrate: a uffd region moved between two regions of one process
    over loopback r3://; per RTT it first reads the region through r3:// and
    stop-and-copies it (the baselines), then migrates once per share of chunks
    written again after TRACK. The share goes in the `source` column (percent)."""
    size, shares, rtts = ctx.m["mig_size"], ctx.m["mig_shares"], ctx.m["mig_rtts"]
    ctx.note("region %s, chunk 64 KiB, 16 pull workers; `source` is the share of chunks written again "
             "after TRACK (%%); downtime: A paused -> B usable; total: leech open -> RELEASE; "
             "total_vs_read: total / reading the region through r3:// with the same workers" % size)
    runs = ctx.runs_for("migration")
    ctx.begin(runs * len(rtts))
    for run in range(runs):
        for rtt in rtts:
            rows = ctx.run_csv([ctx.engine("migrate"), "--size", size, "--chunk", "64K", "--workers", "16",
                                "--rewrite", ",".join(str(x) for x in shares), "--delay-ms", str(rtt)],
                               timeout=900, header_prefix="mode,")
            for r in rows:
                kw = dict(transport="r3", rtt_ms=rtt, workers=16, chunk=int(r["chunk"]),
                          size=int(r["size"]), run=run)
                if r["equal"] == "no":
                    ctx.problem("run %d, RTT %d ms, %s%s: B's bytes differ from A's at the pause; left out" %
                                (run, rtt, r["mode"], " %s%%" % r["rewrite_pct"] if r["mode"] == "migrate"
                                 else ""))
                    continue
                if r["mode"] == "read":
                    ctx.add(strategy="read", metric="total_s", value=float(r["read_s"]), unit="s", **kw)
                elif r["mode"] == "stopcopy":
                    ctx.add(strategy="stop-and-copy", metric="stop_and_copy_downtime_ms",
                            value=float(r["stopcopy_downtime_ms"] or r["downtime_ms"]), unit="ms", **kw)
                elif r["mode"] == "migrate":
                    share = "%g" % float(r["rewrite_pct"])
                    ctx.add(strategy="migrate", source=share, metric="downtime_ms",
                            value=float(r["downtime_ms"]), unit="ms", **kw)
                    ctx.add(strategy="migrate", source=share, metric="total_s",
                            value=float(r["total_s"]), unit="s", **kw)
                    ctx.add(strategy="migrate", source=share, metric="total_vs_read",
                            value=float(r["total_over_read"]), unit="ratio", **kw)
                    ctx.add(strategy="migrate", source=share, metric="dirty_chunks",
                            value=float(r["dirty_chunks"] or 0), unit="chunks", **kw)
            ctx.step()


def exp_nbd_server(ctx):
    runs = ctx.runs_for("nbd_server")
    ctx.begin(runs)
    env = dict(os.environ, SIZE=ctx.m["size"], FIO_SECONDS=str(ctx.m["fio_seconds"]),
               FIO_SIZE=ctx.m["fio_size"], ROUNDS=str(ctx.m.get("nbd_rounds", 3)))
    # nbd.sh wants one directory holding r3serve, r3mount and bench/nbd: a
    # build tree is one; for an installation, links to the pieces
    b = os.path.join(ctx.tmp, "nbdsh")
    os.makedirs(os.path.join(b, "bench"), exist_ok=True)
    for link, target in (("r3serve", ctx.tool("r3serve")), ("r3mount", ctx.tool("r3mount")),
                         ("bench/nbd", ctx.engine("nbd"))):
        if not os.path.lexists(os.path.join(b, link)):
            os.symlink(target, os.path.join(b, link))
    for run in range(runs):
        rows = ctx.run_csv(["bash", os.path.join(HERE, "nbd.sh"), b], env=env,
                           timeout=900, header_prefix="bench,")
        for r in rows:
            if r["bench"] != "fio" or r["unit"] == "x" or not r["value"]:
                continue
            what = r["what"]                    # read_1M_qd16_MBps
            parts = what.split("_")
            metric = "fio_%s_%s_qd%s" % (parts[0], parts[1], parts[2][2:])
            unit = parts[3] if parts[3] != "MBps" else "MB/s"
            ctx.add(strategy=r["target"], source="mem", transport="nbd", rtt_ms=0,
                    workers=int(parts[2][2:]), chunk=size_bytes(parts[1].upper()),
                    size=size_bytes(r["size"]), metric=metric + ("_iops" if unit == "IOPS" else ""),
                    value=float(r["value"]), unit=unit, run=run)
        ctx.step()


EXPERIMENTS = [
    Exp(1, "first-chunk-latency", "First-chunk latency at 0 ms RTT per strategy",
        "study figs. 1-2", exp_first_chunk,
        dict(metric="first_chunk_latency", kind="cdf", logx=True, ylabel="share of samples")),
    Exp(2, "latency-rtt", "First-chunk latency against RTT", "study fig. 3", exp_latency_rtt,
        dict(metric="first_chunk_latency", x="rtt_ms", ylabel="µs", logy=True), rtt="delay"),
    Exp(3, "read-throughput", "Read throughput at 0 ms RTT per strategy", "study figs. 5, 7",
        exp_read0, dict(metric="read_throughput", x="strategy", kind="bars", logy=True, ylabel="MB/s")),
    Exp(4, "read-rtt", "Read throughput against RTT", "study fig. 8", exp_read_rtt,
        dict(metric="read_throughput", x="rtt_ms", ylabel="MB/s", logy=True), rtt="delay"),
    Exp(5, "write-rtt", "Write throughput (write + sync) against RTT", "study fig. 10",
        exp_write_rtt, dict(metric="write_throughput", x="rtt_ms", ylabel="MB/s", logy=True), rtt="delay"),
    Exp(6, "open-pull", "Open to first byte per strategy; pulled before open returns vs workers at 7 ms",
        "study figs. 4, 9, 11", exp_open,
        dict(metric="pulled_at_open", x="workers", ylabel="bytes pulled when open returned",
             logx=True), rtt="delay"),
    Exp(7, "chunking", "Client-side vs server-side chunking (4 KiB), direct and managed, against RTT",
        "study figs. 13-15", exp_chunking,
        dict(metric="read_throughput", x="rtt_ms", ylabel="MB/s", logy=True), rtt="delay"),
    Exp(8, "transports", "Transports r3://, r3s://, nbd://, direct and managed, against RTT",
        "study figs. 16-18 (gRPC, fRPC, Dudirekta)", exp_transports,
        dict(metric="read_throughput", x="rtt_ms", ylabel="MB/s", logy=True), needs=("openssl",), rtt="delay,proxy"),
    Exp(9, "sources", "Sources: first-chunk latency and throughput, direct and managed, against RTT",
        "study figs. 19-24", exp_sources,
        dict(metric="read_throughput", x="source", kind="bars", ylabel="MB/s (0 ms RTT)", logy=True,
             where={"rtt_ms": "0"}), needs=("openssl",), rtt="delay,proxy"),
    Exp(10, "pull-workers", "Pull workers 1-16384 at 0 and 30 ms RTT", "study figs. 4, 9",
        exp_pull_workers, dict(metric="read_throughput", x="workers", ylabel="MB/s", logx=True,
                               logy=True), rtt="delay"),
    Exp(11, "migration", "Migration: downtime and total time against share re-written",
        "study ch. migration", exp_migration,
        dict(kind="dual", metrics=[("downtime_ms", "downtime (ms)", "x1y1"), ("total_s", "total (s)", "x1y2")],
             x="source", series="rtt_ms", xlabel="share of chunks written again after TRACK (%)",
             ylabel="downtime (ms)", y2label="total migration time (s)"), rtt="delay"),
    Exp(12, "uffd-chunk", "uffd chunk size 4 KiB-4 MiB beside the minimal 4 KiB handler",
        "r3 only", exp_uffd_chunk,
        dict(metric="read_throughput", x="chunk", ylabel="MB/s", logx=True)),
    Exp(13, "dirty-pages", "Finding written pages: PAGEMAP_SCAN vs hashing against region size",
        "r3 only", exp_dirty, dict(metric="find_written", x="size", ylabel="ms", logx=True, logy=True),
        peer=("pagemap_scan", "xxh3_hash")),
    Exp(14, "delta-sync", "Delta sync: r3sync vs rsync (default, -B 4096) against the share changed",
        "r3 only", exp_delta_sync,
        dict(metric="sync_time", x="source", series="strategy", ylabel="sync time (ms)", logx=True,
             logy=True, xlabel="share of 4 KiB pages written (%)"),
        needs=("rsync", "openssl"), peer=("r3sync", "rsync -B 4096")),
    Exp(15, "nbd-server", "NBD server: r3serve --nbd vs nbdkit memory (fio nbd engine)", "r3 only",
        exp_nbd_server, dict(metric="fio_read_1M_qd16", x="strategy", kind="bars", ylabel="MB/s"),
        needs=("fio", "nbdkit", "nbdcopy"), peer=("r3serve", "nbdkit-memory")),
]


def find_exp(word):
    for e in EXPERIMENTS:
        if word == str(e.num) or word == e.name:
            return e
    return None


# ---------------------------------------------------------------- results io

def write_csv(out, rows):
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)


def read_csv(out):
    path = os.path.join(out, "results.csv")
    if not os.path.exists(path):
        usage_error("%s: no results.csv" % out)
    with open(path, newline="") as f:
        r = csv.reader(f)
        head = next(r, None)
        if head != HEADER:
            raise SystemExit("%s: %s does not start with the r3bench header" % (NAME, path))
        return [dict(zip(HEADER, row)) for row in r]


def series_name(r):
    if r["experiment"] == "migration" and r["source"]:   # there `source` is the share re-written
        return "%s %s%% re-written" % (r["strategy"], r["source"])
    if r["experiment"] == "delta-sync" and r["source"]:  # there `source` is the share written
        return "%s %s%% changed" % (r["strategy"], r["source"])
    parts = [r["strategy"]]
    for k in ("source", "transport"):
        if r[k] and r[k] not in ("mem", "delay") or (k == "source" and r[k] and r["strategy"] in
                                                      ("direct", "managed")):
            parts.append(r[k])
    return " ".join(p for p in parts if p)


def load_meta(out):
    try:
        with open(os.path.join(out, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- plot

def plot(out, quiet=False):
    if not which("gnuplot"):
        sys.stderr.write("%s: gnuplot is missing: no plots (apt-get install gnuplot-nox)\n" % NAME)
        return 1
    rows = read_csv(out)
    pdir = os.path.join(out, "plots")
    os.makedirs(pdir, exist_ok=True)
    status = 0
    for e in EXPERIMENTS:
        spec = e.plot
        metrics = [m[0] for m in spec.get("metrics", [])] or [spec.get("metric")]
        mine = [r for r in rows if r["experiment"] == e.name and r["metric"] in metrics
                and all(r[k] == v for k, v in spec.get("where", {}).items())]
        if not mine:
            continue
        if spec.get("kind") == "dual":
            status |= plot_dual(pdir, e, spec, mine)
            continue
        groups = {}
        for r in mine:
            key = series_name(r) if spec.get("kind") != "bars" else ""
            if spec.get("series"):
                key = r[spec["series"]]
            if spec.get("kind") == "cdf":
                groups.setdefault(key, {}).setdefault("v", []).append(float(r["value"]))
                continue
            x = r[spec["x"]]
            if spec.get("kind") == "bars":
                x = series_name(r) if spec["x"] == "strategy" else "%s %s" % (r[spec["x"]], r["strategy"])
            groups.setdefault(key, {}).setdefault(x, []).append(float(r["value"]))
        unit = mine[0]["unit"]
        base = os.path.join(pdir, e.name)
        gp = ["set datafile separator ','", "set key outside right top", "set grid",
              "set title \"%d. %s\" noenhanced" % (e.num, e.title.replace('"', "'")),
              "set ylabel \"%s\" noenhanced" % spec.get("ylabel", unit)]
        if spec.get("logy"):
            gp.append("set logscale y")
        if spec.get("logx"):
            gp.append("set logscale x 2" if spec.get("x") in ("chunk", "size", "workers") else "set logscale x")
        plots = []
        width = 900
        if spec.get("kind") == "bars":
            width = max(900, 36 * len(groups.get("", {})) + 200)
        if spec.get("kind") == "cdf":      # the whole distribution: median at 0.5, p99 at 0.99
            gp += ["set xlabel \"%s\" noenhanced" % unit, "set yrange [0:1]", "set logscale x"]
            for i, (key, d) in enumerate(sorted(groups.items())):
                v = sorted(d["v"])
                data = "%s.%d.dat" % (base, i)
                with open(data, "w") as f:
                    for k, x in enumerate(v):
                        f.write("%g,%g\n" % (max(x, 1e-3), (k + 1) / len(v)))
                plots.append("'%s' using 1:2 with steps lw 2 title \"%s\" noenhanced" % (data, key))
        elif spec.get("kind") == "bars":
            data = base + ".dat"
            with open(data, "w") as f:
                for i, (x, v) in enumerate(sorted(groups[""].items(), key=lambda kv: median(kv[1]))):
                    f.write("%d,%s,%g,%g,%g\n" % (i, x.replace(",", " "), median(v), min(v), max(v)))
            gp += ["set style fill solid 0.6", "set boxwidth 0.6", "set xtics rotate by -30 noenhanced",
                   "set key off", "set xlabel \"\"", "set yrange [*:*]"]
            plots.append("'%s' using 1:3:xtic(2) with boxes lc rgb '#4477aa' title 'median', "
                         "'%s' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0 title 'min-max'"
                         % (data, data))
        else:
            gp.append("set xlabel \"%s\" noenhanced" % spec.get("xlabel", {
                "rtt_ms": "RTT (ms)", "workers": "pull workers", "chunk": "chunk (bytes)",
                "size": "region size (bytes)"}.get(spec["x"], spec["x"])))
            for i, (key, pts) in enumerate(sorted(groups.items())):
                data = "%s.%d.dat" % (base, i)
                with open(data, "w") as f:
                    for x in sorted(pts, key=lambda x: float(x or 0)):
                        f.write("%s,%g\n" % (x, median(pts[x])))
                plots.append("'%s' using 1:2 with linespoints lw 2 title \"%s\" noenhanced" % (data, key))
        for term, ext in (("svg size %d,540 dynamic" % width, "svg"), ("pngcairo size %d,540" % width, "png")):
            script = "\n".join(["set terminal " + term, "set output '%s.%s'" % (base, ext)] + gp +
                               ["plot " + ", ".join(plots)]) + "\n"
            with open("%s.%s.gp" % (base, ext), "w") as f:
                f.write(script)
            r = subprocess.run(["gnuplot", "%s.%s.gp" % (base, ext)], stderr=subprocess.PIPE, text=True)
            if r.returncode != 0 or not os.path.getsize("%s.%s" % (base, ext)):
                sys.stderr.write("%s: plot %s.%s failed: %s\n" % (NAME, e.name, ext, r.stderr.strip()))
                status = 1
    if not quiet:
        sys.stderr.write("%s: plots in %s\n" % (NAME, pdir))
    return status


def plot_dual(pdir, e, spec, mine):
    """Two metrics against one x, each on its own y axis (x1y1, x1y2), one
    line per value of spec["series"] and metric (medians over runs)."""
    groups = {}
    for r in mine:
        groups.setdefault((r["metric"], r[spec["series"]]), {}).setdefault(r[spec["x"]], []).append(
            float(r["value"]))
    base = os.path.join(pdir, e.name)
    gp = ["set datafile separator ','", "set key outside right top", "set grid",
          "set title \"%d. %s\" noenhanced" % (e.num, e.title.replace('"', "'")),
          "set xlabel \"%s\" noenhanced" % spec.get("xlabel", spec["x"]),
          "set ylabel \"%s\" noenhanced" % spec.get("ylabel", ""),
          "set y2label \"%s\" noenhanced" % spec.get("y2label", ""), "set ytics nomirror", "set y2tics",
          "set yrange [0:*]", "set y2range [0:*]"]
    plots = []
    for i, (metric, label, axes) in enumerate(spec["metrics"]):
        for j, ser in enumerate(sorted((k[1] for k in groups if k[0] == metric), key=lambda x: float(x or 0))):
            pts = groups[(metric, ser)]
            data = "%s.%d.%d.dat" % (base, i, j)
            with open(data, "w") as f:
                for x in sorted(pts, key=lambda x: float(x or 0)):
                    f.write("%s,%g\n" % (x, median(pts[x])))
            plots.append("'%s' using 1:2 axes %s with linespoints lw 2 dt %d title \"%s, %s %s\" noenhanced"
                         % (data, axes, i + 1, label, "RTT" if spec["series"] == "rtt_ms" else spec["series"],
                            ser + (" ms" if spec["series"] == "rtt_ms" else "")))
    status = 0
    for term, ext in (("svg size 900,540 dynamic", "svg"), ("pngcairo size 900,540", "png")):
        script = "\n".join(["set terminal " + term, "set output '%s.%s'" % (base, ext)] + gp +
                           ["plot " + ", ".join(plots)]) + "\n"
        with open("%s.%s.gp" % (base, ext), "w") as f:
            f.write(script)
        r = subprocess.run(["gnuplot", "%s.%s.gp" % (base, ext)], stderr=subprocess.PIPE, text=True)
        if r.returncode != 0 or not os.path.getsize("%s.%s" % (base, ext)):
            sys.stderr.write("%s: plot %s.%s failed: %s\n" % (NAME, e.name, ext, r.stderr.strip()))
            status = 1
    return status


# ---------------------------------------------------------------- report

def load_study():
    path = os.path.join(DATA, "study.csv")
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(l for l in f if not l.startswith("#"))]


def study_match(rows, s):
    """r3's median for a study row: same experiment, metric, and every field the study row names."""
    out = []
    for r in rows:
        if r["experiment"] != s["experiment"] or r["metric"] != s["metric"]:
            continue
        ok = True
        for k in ("strategy", "source", "transport", "rtt_ms", "workers", "chunk"):
            if s.get(k) and r[k] != s[k]:
                ok = False
        if ok:
            out.append(float(r["value"]))
    return out


def peer_table(mine, peer, point="source"):
    """r3 beside the peer measured in the same run: medians and their ratio,
    for each metric and point both have."""
    a, b = peer
    keyf = ("metric", "unit", "source", "rtt_ms", "workers", "chunk", "size")
    med = {}
    for r in mine:
        if r["strategy"] in (a, b):
            med.setdefault((r["strategy"],) + tuple(r[k] for k in keyf), []).append(float(r["value"]))
    L = ["Beside the peer in the same run:", "",
         "| metric | %s | size | %s | %s | %s / %s |" % (point, a, b, a, b), "|---|---|---|---|---|---|"]
    n = 0
    def num(x):
        try:
            return (0, float(x), "")
        except ValueError:
            return (1, 0.0, x)
    for k in sorted(med, key=lambda k: tuple(num(x) for x in k)):
        if k[0] != a or (b,) + k[1:] not in med:
            continue
        va, vb = median(med[k]), median(med[(b,) + k[1:]])
        L.append("| %s (%s) | %s | %s | %s | %s | %s |" % (k[1], k[2], k[3], k[7], fmt(va), fmt(vb),
                                                   "%.3g×" % (va / vb) if vb else "—"))
        n += 1
    return L + [""] if n else []


def report(out):
    rows = read_csv(out)
    meta = load_meta(out)
    study = load_study()
    L = ["# r3bench report", ""]
    if meta:
        L += ["Run: `%s` on %s — %s cores, kernel %s, load %s before / %s after, r3 %s (git %s)." %
              (meta.get("command", "r3bench run"), meta.get("date", "?"), meta.get("cores", "?"),
               meta.get("kernel", "?"), meta.get("load_before", "?"), meta.get("load_after", "?"),
               meta.get("version", "?"), meta.get("git", "?")),
              "Mode %s, %s run(s) per point, RTT injected by %s." %
              (meta.get("options", {}).get("mode", "?"), meta.get("options", {}).get("runs", "?"),
               meta.get("options", {}).get("rtt_mode", "?")), ""]
    L += ["Values are medians over runs (latency: over samples; p99 beside it). The study's numbers",
          "come from `bench/study.csv` (the thesis' figures as quoted in the issues; the thesis text this",
          "project has lost its figure images, so most figures have no number to compare).", ""]
    status = meta.get("status", {})
    for e in EXPERIMENTS:
        L += ["## %d. %s" % (e.num, e.title), "", "Reproduces: %s. Name: `%s`." % (e.figure, e.name), ""]
        st = status.get(e.name)
        mine = [r for r in rows if r["experiment"] == e.name]
        if st and st != "ok":
            L += ["Status: **%s**" % st, ""]
        for n in meta.get("notes", {}).get(e.name, []):
            L += ["Note: %s" % n, ""]
        if not mine:
            if not st:
                L += ["Status: not run in this results directory.", ""]
            continue
        groups = {}
        for r in mine:
            key = (r["metric"], r["unit"], series_name(r), r["rtt_ms"], r["workers"], r["chunk"], r["size"])
            groups.setdefault(key, []).append(float(r["value"]))
        L += ["| metric | series | RTT ms | workers | chunk | size | median | p99 | n |",
              "|---|---|---|---|---|---|---|---|---|"]
        for key in sorted(groups, key=lambda k: (k[0], k[2], float(k[3] or 0), float(k[4] or 0),
                                                 float(k[5] or 0), float(k[6] or 0))):
            v = groups[key]
            L.append("| %s (%s) | %s | %s | %s | %s | %s | %s | %s | %d |" %
                     (key[0], key[1], key[2], key[3], key[4], key[5], key[6], fmt(median(v)),
                      fmt(pct(v, 99)) if len(v) > 1 else "", len(v)))
        L.append("")
        if e.peer:
            L += peer_table(mine, e.peer, "share (%)" if e.name == "delta-sync" else "source")
        srows = [s for s in study if s["experiment"] == e.name]
        if srows:
            L += ["Beside the study:", "",
                  "| what | study | r3 (median) | r3 / study | study's source |", "|---|---|---|---|---|"]
            for s in srows:
                m = study_match(rows, s)
                sv = float(s["value"]) if s["value"] else None
                rv = median(m) if m else None
                ratio = "%.2f×" % (rv / sv) if (rv is not None and sv) else "—"
                if not sv:
                    L.append("| %s | (no number) | see the table above | — | %s |" % (s["what"], s["ref"]))
                    continue
                L.append("| %s | %s %s | %s | %s | %s |" % (s["what"], s["value"], s["unit"],
                                                           fmt(rv) + (" " + s["unit"] if rv is not None else ""),
                                                           ratio, s["ref"]))
            L.append("")
        else:
            L += ["The study has no figure for this (r3 only).", ""] if e.figure == "r3 only" else \
                 ["No number of the study to put beside these.", ""]
        if os.path.exists(os.path.join(out, "plots", e.name + ".svg")):
            L += ["![%s](plots/%s.svg)" % (e.name, e.name), ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    return 0


# ---------------------------------------------------------------- run

def git_rev():
    try:
        r = subprocess.run(["git", "-C", SRCDIR, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=10)
        return r.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def cmd_run(args):
    mode, out, runs, quiet, rtt_mode, names = "quick", None, None, False, "delay", []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--quick", "--full", "--smoke"):
            mode = a[2:]
        elif a == "--quiet" or a == "-q":
            quiet = True
        elif a in ("--out", "--runs", "--rtt-mode") or a.startswith(("--out=", "--runs=", "--rtt-mode=")):
            if "=" in a:
                a, v = a.split("=", 1)
            else:
                if i + 1 >= len(args):
                    usage_error("%s needs a value" % a)
                i += 1
                v = args[i]
            if a == "--out":
                if not v:
                    usage_error("--out: empty directory name")
                out = v
            elif a == "--runs":
                if not v.isdigit() or not 1 <= int(v) <= 1000:
                    usage_error("--runs %s: not a number from 1 to 1000" % v)
                runs = int(v)
            else:
                if v not in ("delay", "proxy"):
                    usage_error("--rtt-mode %s: not delay or proxy" % v)
                rtt_mode = v
        elif a in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        elif a.startswith("-"):
            usage_error("unknown option %s" % a)
        else:
            e = find_exp(a)
            if not e:
                usage_error("no experiment '%s' (see r3bench list)" % a)
            if e not in names:
                names.append(e)
        i += 1
    exps = names or EXPERIMENTS
    if out is None:
        out = time.strftime("r3bench-%Y%m%d-%H%M%S")
    os.makedirs(out, exist_ok=True)
    ctx = Ctx(out, mode, runs, rtt_mode, quiet)
    runs = ctx.runs
    meta = dict(command=" ".join(["r3bench", "run"] + args), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                cores=os.cpu_count(), kernel=platform.release(), machine=platform.machine(),
                load_before=loadavg(), git=git_rev(), version=VERSION, builddir=BUILDDIR,
                options=dict(mode=mode, runs=runs, rtt_mode=rtt_mode, out=out,
                             experiments=[e.name for e in exps], params=MODES[mode]),
                status={}, notes={}, seconds={})

    def on_signal(sig, frame):
        ctx.servers.stop()
        shutil.rmtree(ctx.tmp, ignore_errors=True)
        sys.exit(128 + sig)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    failed = 0
    t_all = time.time()
    try:
        for e in exps:
            ctx.exp = e
            t0 = time.time()
            if rtt_mode == "proxy" and e.rtt == "delay":
                ctx.note("--rtt-mode proxy does not apply here: RTT comes from the delay stage "
                         "(only transports and sources put a proxy in front of their servers)")
            if e.status:
                st = e.status
            elif e.fn is None:
                st = "not yet implemented"
            elif any(not which(p) for p in e.needs):
                st = "skipped: %s missing" % ", ".join(p for p in e.needs if not which(p))
            else:
                try:
                    e.fn(ctx)
                    st = "ok"
                    if ctx.problems.get(e.name):
                        st = "partial: " + "; ".join(ctx.problems[e.name])
                except EngineError as x:
                    st = "failed: %s" % x
                    failed += 1
                finally:
                    ctx.servers.stop()
            meta["status"][e.name] = st
            meta["seconds"][e.name] = round(time.time() - t0, 1)
            ctx.end_line(st if st != "ok" else "done in %.0fs" % (time.time() - t0))
            write_csv(out, ctx.rows)            # after each experiment: a partial run keeps its rows
    finally:
        ctx.servers.stop()
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    meta["notes"] = ctx.notes
    meta["load_after"] = loadavg()
    meta["seconds"]["total"] = round(time.time() - t_all, 1)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    write_csv(out, ctx.rows)
    rc = plot(out, quiet)
    report(out)
    if not quiet:
        sys.stderr.write("%s: %d rows in %s/results.csv, report in %s/report.md (%.0fs)\n" %
                         (NAME, len(ctx.rows), out, out, time.time() - t_all))
    return 1 if failed or rc else 0


def cmd_list(args):
    if args:
        usage_error("list takes no argument (got '%s')" % args[0])
    for e in EXPERIMENTS:
        if e.status:
            st = e.status
        elif e.fn is None:
            st = "not yet implemented"
        else:
            miss = [p for p in e.needs if not which(p)]
            st = "needs %s (missing)" % ", ".join(miss) if miss else "ready"
        rtt = {None: "", "delay": "; RTT: delay stage (--rtt-mode proxy does not apply)",
               "delay,proxy": "; RTT: delay stage or --rtt-mode proxy"}[e.rtt]
        print("%2d  %-20s %s\n    reproduces: %s; %s%s" % (e.num, e.name, e.title, e.figure, st, rtt))
    return 0


def main(argv):
    if not argv:
        usage_error("no command (list, run, plot or report)")
    cmd, args = argv[0], argv[1:]
    if cmd in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if cmd in ("-V", "--version"):
        print("%s (r3) %s" % (NAME, VERSION))
        return 0
    if any(a in ("-h", "--help") for a in args):
        sys.stdout.write(USAGE)
        return 0
    if cmd == "list":
        return cmd_list(args)
    if cmd == "run":
        return cmd_run(args)
    if cmd in ("plot", "report"):
        if len(args) != 1 or args[0].startswith("-"):
            usage_error("%s needs one directory" % cmd if not args or args[0].startswith("-") or len(args) < 1
                        else "%s takes one directory (got %d arguments)" % (cmd, len(args)))
        if not os.path.isdir(args[0]):
            usage_error("%s: no such directory" % args[0])
        return plot(args[0]) if cmd == "plot" else report(args[0])
    if cmd.startswith("-"):
        usage_error("unknown option %s" % cmd)
    usage_error("unknown command '%s' (list, run, plot or report)" % cmd)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
