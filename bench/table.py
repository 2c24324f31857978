#!/usr/bin/env python3
"""Turn bench/run.sh's raw runs into the comparison table.

Usage: table.py RUNS_TSV SIZE_BYTES HEADER PEERS
  RUNS_TSV  lines: round, op, client, tag, seconds, status, note (tab separated);
            tag names the peer a haul run is paired with, "*" for all peers.
  PEERS     "op:client:label|op:client:label|..." in table order.

For each comparison (op, peer) it prints every round's MB/s for haul and the
peer, both medians, and the median over rounds of haul/peer (>1: haul is
faster). Failed runs show as "x" and are left out of every statistic.
"""

import statistics
import sys


def main() -> None:
    tsv, size, header, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    runs = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 7:
                continue
            rnd, op, client, tag, secs, status, note = parts
            runs.append(
                {
                    "round": int(rnd),
                    "op": op,
                    "client": client,
                    "tag": tag,
                    "mbs": size / float(secs) / 1e6 if status == "ok" else None,
                    "note": note,
                }
            )
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
        haul = per_round(op, lambda r, c=client: r["client"] == "haul" and r["tag"] in (c, "*"))
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

    head = ("op", "peer", "haul MB/s per round", "peer MB/s per round",
            "haul med", "peer med", "ratio", "range")
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
    right = {4, 5, 6, 7}

    def line(cols):
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cols, widths))
        ).rstrip()

    print(header)
    print("MB/s = 10^6 bytes per wall-clock second, process start to exit. "
          "ratio = median over rounds of haul/peer (>1: haul faster); range = min-max of those.")
    print()
    print(line(head))
    print(line(["-" * w for w in widths]))
    prev = None
    for row in rows:
        if prev is not None and row[0] != prev:
            print()
        prev = row[0]
        print(line(row))
    if notes:
        print()
        print("notes (failed runs are x and not counted; haul runs with attempts>1 needed a resume):")
        for n in notes:
            print("  " + n)


def fmt(d, k):
    if k not in d:
        return "."
    return "x" if d[k] is None else f"{d[k]:.0f}"


if __name__ == "__main__":
    main()
