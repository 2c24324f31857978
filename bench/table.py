#!/usr/bin/env python3
"""Turn bench/run.sh's raw runs into the comparison table.

Usage: table.py RUNS_TSV SIZE_BYTES HEADER PEERS [A_CLIENT [A_LABEL]]
       table.py --cuts RUNS_TSV SIZE_BYTES HEADER
       table.py --rss RUNS_TSV SIZE_BYTES HEADER
  RUNS_TSV  lines: round, op, client, tag, seconds, status, note and
            optionally extra (tab separated); tag names the peer an A-side
            run is paired with, "*" for all peers; extra is "k=v,k=v" (haul's
            JSON counters, the proxy's counters, peak RSS) or "-".
  PEERS     "op:client:label|op:client:label|..." in table order.
  A_CLIENT  the client every peer is compared with (default haul).

For each comparison (op, peer) it prints every round's MB/s for the A client
and the peer, both medians, and the median over rounds of A/peer (>1: A is
faster). Failed runs show as "x" and are left out of every statistic.

--cuts: per op, the wall time of a clean haul run (straight to the server),
one through the proxy without faults, and one through the proxy with cuts;
the median over rounds of cut/clean and cut/proxy time; cuts fired, bytes
re-sent per cut, how much of that the proxy itself had held and dropped
(proxy_drop_up/proxy_drop_down from the shaper) and the rest (haul's own
share), and the reconnect waits (backoff) haul logged.
--rss: per op and client, peak RSS and MB/s of every round.
"""

import statistics
import sys


def load(tsv, size):
    runs = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 7:
                parts.append("-")
            if len(parts) != 8:
                continue
            rnd, op, client, tag, secs, status, note, extra = parts
            kv = {}
            for item in extra.split(","):
                k, eq, v = item.partition("=")
                if eq:
                    try:
                        kv[k] = float(v)
                    except ValueError:
                        pass
            runs.append(
                {
                    "round": int(rnd),
                    "op": op,
                    "client": client,
                    "tag": tag,
                    "secs": float(secs) if status == "ok" else None,
                    "mbs": size / float(secs) / 1e6 if status == "ok" else None,
                    "note": note,
                    "extra": kv,
                }
            )
    return runs


def main() -> None:
    if sys.argv[1] in ("--cuts", "--rss"):
        tsv, size, header = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        runs = load(tsv, size)
        (cuts if sys.argv[1] == "--cuts" else rss)(runs, size, header)
        return
    tsv, size, header, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    a_client = sys.argv[5] if len(sys.argv) > 5 else "haul"
    a_label = sys.argv[6] if len(sys.argv) > 6 else a_client
    runs = load(tsv, size)
    rounds = sorted({r["round"] for r in runs})

    def per_round(op, pred):
        out = {}
        for r in runs:
            if r["op"] == op and pred(r):
                out[r["round"]] = r["mbs"]
        return out

    rows, notes = [], []
    for spec in filter(None, peers.split("|")):
        op, client, label = spec.split(":", 2)
        peer = per_round(op, lambda r, c=client: r["client"] == c)
        haul = per_round(op, lambda r, c=client: r["client"] == a_client and r["tag"] in (c, "*"))
        if not peer and not haul:
            continue
        ok_h = [v for v in haul.values() if v is not None]
        ok_p = [v for v in peer.values() if v is not None]
        ratios = [haul[k] / peer[k] for k in rounds if haul.get(k) and peer.get(k)]
        rows.append(
            (
                op,
                label,
                " ".join(fmt(haul, k) for k in rounds),
                " ".join(fmt(peer, k) for k in rounds),
                f"{statistics.median(ok_h):.0f}" if ok_h else "-",
                f"{statistics.median(ok_p):.0f}" if ok_p else "-",
                f"{statistics.median(ratios):.2f}" if ratios else "-",
                f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-",
            )
        )
    for r in runs:
        if r["note"] != "-":
            notes.append(f"round {r['round']} {r['op']} {r['client']}: {r['note']}")

    head = ("op", "peer", "A MB/s per round", "peer MB/s per round",
            "A med", "peer med", "ratio", "range")
    print(header)
    print(f"A = {a_label}. MB/s = 10^6 bytes per wall-clock second, process start to exit. "
          "ratio = median over rounds of A/peer (>1: A faster); range = min-max of those.")
    print()
    table(head, rows, {4, 5, 6, 7})
    print_notes("notes (failed runs are x and not counted; haul runs flagged here needed a resume):", notes)


def print_notes(title, notes):
    """Print the notes under title, if there are any."""
    if notes:
        print()
        print(title)
        for n in notes:
            print("  " + n)


def table(head, rows, right):
    """Print rows under head, columns aligned, a blank line between ops."""
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]

    def line(cols):
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cols, widths))
        ).rstrip()

    print(line(head))
    print(line(["-" * w for w in widths]))
    prev = None
    for row in rows:
        if prev is not None and row[0] != prev:
            print()
        prev = row[0]
        print(line(row))


def med(xs, f="{:.2f}"):
    xs = [x for x in xs if x is not None]
    return f.format(statistics.median(xs)) if xs else "-"


def failures(runs):
    out = []
    for r in runs:
        if r["secs"] is None or r["note"] != "-":
            out.append(f"round {r['round']} {r['op']} {r['client']}: {r['note']}")
    return out


def cuts(runs, size, header):
    """Cut runs against clean ones: time ratios, re-sent bytes, backoff."""
    rounds = sorted({r["round"] for r in runs})
    ops = list(dict.fromkeys(r["op"] for r in runs))
    rows = []
    for op in ops:
        by = {}
        for r in runs:
            if r["op"] == op:
                by[(r["client"], r["round"])] = r
        def secs(c, k):
            r = by.get((c, k))
            return r["secs"] if r else None
        def per_round(c):
            return " ".join("." if (c, k) not in by else
                            ("x" if secs(c, k) is None else f"{secs(c, k):.1f}") for k in rounds)
        r_clean = [secs("haul-cut", k) / secs("haul", k) for k in rounds
                   if secs("haul-cut", k) and secs("haul", k)]
        r_proxy = [secs("haul-cut", k) / secs("haul-proxy", k) for k in rounds
                   if secs("haul-cut", k) and secs("haul-proxy", k)]
        # Time of a cut run without its reconnect waits, against clean.
        r_nowait = [(secs("haul-cut", k) - by[("haul-cut", k)]["extra"].get("backoff_ms", 0) / 1000)
                    / secs("haul", k) for k in rounds if secs("haul-cut", k) and secs("haul", k)]
        cut_runs = [by[("haul-cut", k)] for k in rounds if secs("haul-cut", k)]
        ncuts = [r["extra"].get("cuts") for r in cut_runs]
        per_cut = [r["extra"].get("resent_bytes", 0) / r["extra"]["cuts"] / 1024
                   for r in cut_runs if r["extra"].get("cuts")]
        # The proxy's share of the re-sent bytes: what the cuts dropped
        # inside it in the transfer's direction (client to server for a
        # put, server to client for a get). The rest was held by haul's
        # side (its socket buffers) or lost in the kernel between them.
        drop_key = "proxy_drop_up" if op.endswith("-put") else "proxy_drop_down"
        proxy_held = [r["extra"].get(drop_key, 0) / r["extra"]["cuts"] / 1024
                      for r in cut_runs if r["extra"].get("cuts")]
        haul_held = [max(0.0, r["extra"].get("resent_bytes", 0) / r["extra"]["cuts"] / 1024
                         - r["extra"].get(drop_key, 0) / r["extra"]["cuts"] / 1024)
                     for r in cut_runs if r["extra"].get("cuts")]
        backoff = [r["extra"].get("backoff_ms", 0) / 1000 for r in cut_runs]
        attempts = [r["extra"].get("attempts") for r in cut_runs]
        rows.append((
            op, per_round("haul"), per_round("haul-proxy"), per_round("haul-cut"),
            med([secs("haul", k) for k in rounds], "{:.1f}"),
            med([secs("haul-proxy", k) for k in rounds], "{:.1f}"),
            med([secs("haul-cut", k) for k in rounds], "{:.1f}"),
            med(r_clean), med(r_proxy), med(ncuts, "{:.0f}"), med(attempts, "{:.0f}"),
            med(per_cut, "{:.0f}"), f"{max(per_cut):.0f}" if per_cut else "-",
            med(proxy_held, "{:.0f}"), med(haul_held, "{:.0f}"),
            med(backoff, "{:.1f}"), med(r_nowait),
        ))
    head = ("op", "clean s/round", "proxy s/round", "cut s/round", "clean", "proxy", "cut",
            "cut/clean", "cut/proxy", "cuts", "attempts", "resent KiB/cut", "max",
            "proxy-held KiB/cut", "haul-held KiB/cut", "backoff s", "(cut-backoff)/clean")
    print(header)
    print("s = wall-clock seconds, process start to exit (medians over rounds). clean = haul straight to "
          "the server; proxy = through bench/shaper, no faults; cut = through it with the cuts. "
          "cut/clean, cut/proxy = median over rounds of the time ratio (target cut/clean <= 1.2). "
          "resent KiB/cut = haul's resent_bytes / cuts fired (target <= 1024), max = its worst round. "
          "proxy-held KiB/cut = bytes the cuts dropped inside bench/shaper in the transfer's direction "
          "(its kernel receive queue, its buffers, unsent bytes of a reset socket), per cut: a harness "
          "artifact a direct path would not have, reported, not subtracted. haul-held KiB/cut = resent "
          "- proxy-held (floor 0): what haul's own side (its socket send buffer) lost, the share the "
          "1024 target is meant for. All three are medians over rounds. backoff s = the reconnect "
          "waits haul logged (-v) in a cut run.")
    print()
    table(head, rows, set(range(4, len(head))))
    notes = failures(runs)
    print_notes("notes (failed runs are x and not counted):", notes)


def rss(runs, size, header):
    """Peak RSS and MB/s of each op and client."""
    rows = []
    keys = list(dict.fromkeys((r["op"], r["client"]) for r in runs))
    for op, client in keys:
        rs = [r for r in runs if r["op"] == op and r["client"] == client]
        kb = [r["extra"].get("rss_kb") for r in rs if r["extra"].get("rss_kb")]
        rows.append((
            op, client,
            " ".join(f"{r['extra']['rss_kb'] / 1024:.1f}" if r["extra"].get("rss_kb") else "x" for r in rs),
            f"{max(kb) / 1024:.1f}" if kb else "-",
            " ".join("x" if r["mbs"] is None else f"{r['mbs']:.0f}" for r in rs),
            " ".join(f"{r['extra'].get('attempts', 0):.0f}" for r in rs),
        ))
    head = ("op", "client", "peak RSS MiB per round", "max MiB", "MB/s per round", "attempts")
    print(header)
    print("peak RSS = /usr/bin/time %M of the haul process (target <= 64 MiB whatever the segment count). "
          "Straight to the server.")
    print()
    table(head, rows, {3})
    notes = failures(runs)
    print_notes("notes (failed runs are x):", notes)


def fmt(d, k):
    if k not in d:
        return "."
    return "x" if d[k] is None else f"{d[k]:.0f}"


if __name__ == "__main__":
    main()
