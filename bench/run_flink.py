#!/usr/bin/env python3
"""Runs a Flink SQL script on Apache Flink (PyFlink's local mini-cluster) and prints figures.

    run_flink.py SCRIPT [--set NAME=VALUE ...] [--parallelism 1] [--mini-batch]
    run_flink.py SCRIPT --substitute-only [--set NAME=VALUE ...]

The script is a Flink SQL-client script. `${NAME:-default}` placeholders are replaced first (from
--set, then the environment, then the default), so the same text can be handed to rsql-client.
Statements other than INSERT run one by one; the INSERTs run as one job (a statement set when
there are several), in streaming mode, with the given parallelism (default 1).

Unless --no-warmup is given, the script first runs once in the same JVM with a tenth of the rows
(at least 1000 per source), so the measured run sees a warmed-up JVM, as a long-running job
would; a cold first job here spends several extra seconds on JIT compilation and class loading.

The last line printed is

    RESULT engine=flink script=NAME rows=N seconds=S rows_per_s=R cpu_s=C rows_per_cpu_s=P \
           peak_rss_mb=M setup_s=U

rows: the sum of the script's datagen 'number-of-rows' options (what the sources emit);
seconds: wall time of the measured job (submission to completion), without JVM start, planning
and the warm-up run;
cpu_s: CPU time the JVM process tree spent during the job; peak_rss_mb: the JVM's peak resident
set over its life (VmHWM); setup_s: JVM start, DDL and warm-up before the measured job.
Exit status 3 means PyFlink or Java is missing.
"""

import argparse
import os
import re
import sys
import time

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ROWS_OPTION = re.compile(r"'number-of-rows'\s*=\s*'(-?\d+)'")


def substitute(text, values):
    """Replaces ${NAME} and ${NAME:-default}; an unset NAME without default is an error."""

    def repl(m):
        name, default = m.group(1), m.group(2)
        if name in values:
            return values[name]
        if default is not None:
            return default
        raise SystemExit(f"run_flink.py: the script uses ${{{name}}} and no value is set; pass --set {name}=...")

    return PLACEHOLDER.sub(repl, text)


def split_statements(text):
    """Splits a script on ';' outside quotes and comments; drops comments and empty statements."""
    out, cur, i, n = [], [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in ("'", "`", '"'):
            j = i + 1
            while j < n:
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            cur.append(text[i : j + 1])
            i = j + 1
            continue
        if c == ";":
            stmt = "".join(cur).strip()
            if stmt:
                out.append(stmt)
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    stmt = "".join(cur).strip()
    if stmt:
        out.append(stmt)
    return out


def source_rows(text):
    return sum(max(0, int(v)) for v in ROWS_OPTION.findall(text))


def _children():
    """Maps each pid to its child pids, from /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def jvm_tree():
    """Pids of the java processes started by this process, and their descendants."""
    kids = _children()
    java = []
    for pid in kids.get(os.getpid(), []):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "java":
                    java.append(pid)
        except OSError:
            pass
    tree, todo = [], list(java)
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    return tree


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def peak_rss_mb(pids):
    kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("script")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="placeholder value")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--mini-batch", action="store_true", help="enable Flink's mini-batch aggregation (not its default)")
    ap.add_argument("--no-warmup", action="store_true", help="measure the first (cold) job")
    ap.add_argument("--substitute-only", action="store_true", help="print the script with placeholders filled in")
    args = ap.parse_args()

    values = dict(os.environ)
    for kv in args.set:
        if "=" not in kv:
            raise SystemExit(f"run_flink.py: --set wants NAME=VALUE, got '{kv}'")
        k, v = kv.split("=", 1)
        values[k] = v
    with open(args.script) as f:
        text = substitute(f.read(), values)
    if args.substitute_only:
        sys.stdout.write(text)
        return 0

    try:
        from pyflink.table import EnvironmentSettings, TableEnvironment
    except ImportError:
        print("flink: PyFlink is not installed for this Python; run bench/run.sh --install-flink", file=sys.stderr)
        return 3

    rows = source_rows(text)
    name = os.path.basename(args.script)
    started = time.time()

    def run(script_text):
        """Runs the script in a fresh TableEnvironment; returns (job seconds, JVM CPU seconds, job start)."""
        t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
        conf = t_env.get_config()
        conf.set("parallelism.default", str(args.parallelism))
        conf.set("table.exec.resource.default-parallelism", str(args.parallelism))
        if args.mini_batch:
            conf.set("table.exec.mini-batch.enabled", "true")
            conf.set("table.exec.mini-batch.allow-latency", "1 s")
            conf.set("table.exec.mini-batch.size", "5000")
        inserts = []
        for stmt in split_statements(script_text):
            if re.match(r"(?is)^\s*INSERT\s", stmt):
                inserts.append(stmt)
            else:
                t_env.execute_sql(stmt)
        if not inserts:
            raise SystemExit(f"run_flink.py: {name} has no INSERT statement to run")
        cpu_before = cpu_seconds(jvm_tree())
        job_start = time.time()
        if len(inserts) == 1:
            result = t_env.execute_sql(inserts[0])
        else:
            stmt_set = t_env.create_statement_set()
            for stmt in inserts:
                stmt_set.add_insert_sql(stmt)
            result = stmt_set.execute()
        result.wait()
        return time.time() - job_start, cpu_seconds(jvm_tree()) - cpu_before, job_start

    if not args.no_warmup:
        warm = ROWS_OPTION.sub(lambda m: f"'number-of-rows' = '{max(1000, int(m.group(1)) // 10)}'", text)
        run(warm)
    seconds, cpu, job_start = run(text)
    rss = peak_rss_mb(jvm_tree())

    print(
        f"RESULT engine=flink script={name} rows={rows} seconds={seconds:.3f} "
        f"rows_per_s={rows / seconds if seconds > 0 else 0:.0f} cpu_s={cpu:.2f} "
        f"rows_per_cpu_s={rows / cpu if cpu > 0 else 0:.0f} peak_rss_mb={rss:.0f} "
        f"setup_s={job_start - started:.2f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
