#!/usr/bin/env python3
"""Turn bench/tree.sh's raw runs into its tables (standard library only).

Usage: tree_table.py tree RUNS_TSV HEADER OPS PEERS HAUL_BATCH [PARALLEL]
       tree_table.py rss  RUNS_TSV HEADER TARGET_MIB HAUL_BATCH
  RUNS_TSV  tab-separated lines: set kind round op tool secs status note
            logins other bytes rewritten load1 rss_kib conns wire_up
            wire_down cpu_s ("-" where unknown);
            set is "tree" or "rss", kind "run" (from an empty destination)
            or "rerun" (on the complete tree the tool's last run left).
  OPS, PEERS  space-separated, in table order.
  HAUL_BATCH  1 when the haul build has put -r/--parallel, else its rows
            read "n/a (no batch mode in this build)".

tree: per op, each tool's median seconds over its good runs (min-max), the
ratio faster peer / haul of those medians (> 1: haul is faster), logins per
run (the range over runs), and haul's targets (ratio >= 1.0, logins <=
PARALLEL + 1; PARALLEL default 8); then the rerun rows: seconds, bytes, files written again, and
haul's targets there (nothing sent, no slower than the faster peer); then
every run.
rss: per tool, peak RSS of every round, median and max, against the target.
"""

import statistics
import sys

NA = "n/a (no batch mode in this build)"


def load(path, want_set):
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 18 or p[0] != want_set:
                continue
            runs.append(dict(zip(
                ("set", "kind", "round", "op", "tool", "secs", "status", "note",
                 "logins", "other", "bytes", "rewritten", "load", "rss",
                 "conns", "up", "down", "cpu"), p)))
    return runs


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_secs(xs):
    if not xs:
        return "x"
    m = med(xs)
    if len(xs) == 1:
        return "%.2f" % m
    return "%.2f (%.2f-%.2f)" % (m, min(xs), max(xs))


def fmt_count(xs):
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return "%d" % lo if lo == hi else "%d-%d" % (lo, hi)


def fmt_bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


def render(rows):
    """rows: list of lists of str, the first the header; a markdown table."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def tree(path, header, ops, peers, batch, par):
    runs = load(path, "tree")
    tools = peers + ["haul"]
    print(header)
    print("seconds: median over good runs (min-max), wall time from process start to exit;"
          " ratio: faster peer's median / haul's median (> 1: haul is faster)")
    net = any(r["conns"] != "-" for r in runs)
    print("logins per run: FTP = vsftpd sessions that answered '230 Login successful.' and"
          " named this bench's directory; SFTP = " +
          ("SSH connections the tool opened (nftables counter on its cgroup)" if net else
           "every 'Accepted password/publickey' line of sshd's log during the run"
           " (the shared test bed's other users included: no wire counters)"))
    print()
    head = ["op"] + ["%s s" % t for t in tools] + ["haul vs faster peer"] + \
        ["logins %s" % t for t in tools] + ["haul: >= 1.0x, logins <= %d" % (par + 1)]
    rows = [head]
    for op in ops:
        secs, logins = {}, {}
        for t in tools:
            good = [r for r in runs if r["kind"] == "run" and r["op"] == op and r["tool"] == t and r["status"] == "ok"]
            secs[t] = [float(r["secs"]) for r in good]
            logins[t] = [int(r["logins"]) for r in good if r["logins"].isdigit()]
        meds = {t: med(secs[t]) for t in peers if secs[t]}
        row = [op] + [fmt_secs(secs[t]) for t in peers]
        if batch:
            row.append(fmt_secs(secs["haul"]))
            if meds and secs["haul"]:
                best = min(meds, key=meds.get)
                row.append("%.2fx (vs %s)" % (meds[best] / med(secs["haul"]), best))
            else:
                row.append("-")
        else:
            row += ["n/a", NA]
        row += [fmt_count(logins[t]) for t in peers] + [fmt_count(logins["haul"]) if batch else "n/a"]
        if batch and secs["haul"] and meds:
            ok_ratio = min(meds.values()) / med(secs["haul"]) >= 1.0
            ok_logins = bool(logins["haul"]) and max(logins["haul"]) <= par + 1
            row.append("met" if ok_ratio and ok_logins else "MISSED (%s)" % ", ".join(
                x for x, ok in (("slower", ok_ratio), ("logins", ok_logins)) if not ok))
        else:
            row.append("-")
        rows.append(row)
    print(render(rows))

    # CPU seconds (user + sys) of the client, which a loaded machine
    # disturbs far less than wall time; the servers' CPU is not in it.
    if any(r["cpu"] != "-" for r in runs):
        print()
        print("client CPU seconds (user+sys of every process of the run, from its cgroup's cpu.stat;"
              " without the cgroup, GNU time's figure for the tool and the children it waited for;"
              " the server's CPU is not counted): median over good runs; ratio as above")
        print()
        rows = [["op"] + ["%s CPU s" % t for t in tools] + ["haul vs faster peer (CPU)"]]
        for op in ops:
            cpu = {t: [float(r["cpu"]) for r in runs if r["kind"] == "run" and r["op"] == op and r["tool"] == t
                       and r["status"] == "ok" and r["cpu"] != "-"] for t in tools}
            row = [op] + [fmt_secs(cpu[t]) for t in peers]
            if batch:
                row.append(fmt_secs(cpu["haul"]))
                pm = {t: med(cpu[t]) for t in peers if cpu[t]}
                if pm and cpu["haul"] and med(cpu["haul"]) > 0:
                    best = min(pm, key=pm.get)
                    row.append("%.2fx (vs %s)" % (pm[best] / med(cpu["haul"]), best))
                else:
                    row.append("-")
            else:
                row += ["n/a", NA]
            rows.append(row)
        print(render(rows))

    reruns = [r for r in runs if r["kind"] == "rerun"]
    if reruns:
        print()
        print("rerun on a complete tree (the tool's last run left it; haul keeps that run's cache dir):"
              " bytes = file data on FTP (vsftpd's UPLOAD/DOWNLOAD lines); on SFTP the SSH bytes in"
              " the transfer's direction (nftables, the tool's sockets only; listings, stats and"
              " protocol included, so never 0); rewritten = files whose inode, size or mtime changed")
        print()
        rows = [["op", "tool", "rerun s", "bytes", "files rewritten", "logins", "status",
                 "haul: nothing sent, <= faster peer's time"]]
        for op in ops:
            for t in tools:
                rs = [r for r in reruns if r["op"] == op and r["tool"] == t]
                if t == "haul" and not batch:
                    rows.append([op, t, "n/a", "", "", "", NA, ""])
                    continue
                if not rs:
                    continue
                good = [r for r in rs if r["status"] == "ok"]
                rows.append([
                    op, t, fmt_secs([float(r["secs"]) for r in good]),
                    fmt_bytes(statistics.median([float(r["bytes"]) for r in rs]))
                    if all(r["bytes"] != "-" for r in rs) else "-",
                    fmt_count([int(r["rewritten"]) for r in rs if r["rewritten"].isdigit()]),
                    fmt_count([int(r["logins"]) for r in rs if r["logins"].isdigit()]),
                    ",".join(sorted({r["status"] for r in rs})),
                    rerun_verdict(op, rs, good, [r for r in reruns if r["op"] == op and r["tool"] in peers
                                                 and r["status"] == "ok"]) if t == "haul" else "",
                ])
        print(render(rows))

    print()
    print("every run (s/logins/TCP connections to the control or SSH port; x = failed):")
    for op in ops:
        for t in tools:
            rs = [r for r in runs if r["kind"] == "run" and r["op"] == op and r["tool"] == t]
            if not rs:
                continue
            cells = ["%s%s/%s/%s" % ("%.2f" % float(r["secs"]) if r["status"] == "ok" else "x",
                                     "" if r["status"] == "ok" else "(%.1f)" % float(r["secs"]), r["logins"],
                                     r["conns"]) for r in rs]
            print("  %-9s %-7s %s   load %s" % (op, t, "  ".join(cells), " ".join(r["load"] for r in rs)))
    notes(runs)


def rerun_verdict(op, rs, good, peer_good):
    """haul's rerun targets: no file data sent (FTP: 0 bytes in vsftpd's
    log; SFTP: no file rewritten, the SSH bytes being protocol), and a median
    time at most the faster peer's."""
    if not good or len(good) != len(rs):
        return "MISSED (failed)"
    why = []
    if op.startswith("ftp") and any(r["bytes"] not in ("0", "-") for r in rs):
        why.append("bytes sent")
    if any(r["rewritten"] not in ("0", "-") for r in rs):
        why.append("files rewritten")
    if peer_good:
        by_tool = {}
        for r in peer_good:
            by_tool.setdefault(r["tool"], []).append(float(r["secs"]))
        if med([float(r["secs"]) for r in good]) > min(med(v) for v in by_tool.values()):
            why.append("slower")
    return "met" if not why else "MISSED (%s)" % ", ".join(why)


def notes(runs):
    ns = []
    for r in runs:
        if r["status"] != "ok" or r["note"] not in ("-", ""):
            ns.append("%s %s round %s %s %s: %s %s" % (r["set"], r["kind"], r["round"], r["op"], r["tool"],
                                                       r["status"], r["note"]))
    others = [int(r["other"]) for r in runs if r["other"].isdigit() and r["other"] != "0"]
    if others:
        ns.append("the shared test bed's other users logged in %d time(s) during %d of %d runs (not counted)"
                  % (sum(others), len(others), len(runs)))
    if ns:
        print()
        print("notes:")
        for n in ns:
            print("  " + n)


def rss(path, header, target, batch):
    runs = load(path, "rss")
    print(header)
    print("target for haul: <= %d MiB" % target)
    print()
    rows = [["tool", "peak RSS MiB (median)", "max", "every round", "s (median)", "target"]]
    for t in ("rclone", "haul"):
        rs = [r for r in runs if r["tool"] == t]
        if t == "haul" and not batch:
            rows.append(["haul", "n/a", "", "", "", NA])
            continue
        if not rs:
            continue
        good = [r for r in rs if r["status"] == "ok" and r["rss"].isdigit()]
        mib = [int(r["rss"]) / 1024 for r in good]
        every = " ".join("%.0f" % (int(r["rss"]) / 1024) if (r["status"] == "ok" and r["rss"].isdigit()) else "x"
                         for r in rs)
        verdict = "-"
        if t == "haul" and mib:
            verdict = "met" if max(mib) <= target else "MISSED"
        rows.append([t, "%.0f" % med(mib) if mib else "x", "%.0f" % max(mib) if mib else "x", every,
                     "%.2f" % med([float(r["secs"]) for r in good]) if good else "x", verdict])
    print(render(rows))
    notes(runs)


def main(argv):
    if len(argv) in (7, 8) and argv[1] == "tree":
        tree(argv[2], argv[3], argv[4].split(), argv[5].split(), argv[6] == "1",
             int(argv[7]) if len(argv) == 8 else 8)
    elif len(argv) == 6 and argv[1] == "rss":
        rss(argv[2], argv[3], int(argv[4]), argv[5] == "1")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
