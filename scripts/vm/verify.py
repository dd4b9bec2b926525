#!/usr/bin/env python3
"""Compares what the guest acknowledged (boot-N/acks.log, seen by the host as it happened)
with what survived the power cuts: the journal's events (the final boot's `jev` lines), the
collector's store (`posguard-collector query`, JSON lines) and the cache read back at every
later boot (`cache_readback`). Prints the figures; exits 1 naming each loss.

usage: verify.py WORKDIR CUTS COLLECTOR_JSONL
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path


def lines(path):
    return path.read_bytes().decode("utf-8", "replace").replace("\r", "").splitlines()


def find_reference(value):
    """The POS event's reference, wherever the event's encoding puts it."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            return ref
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            ref = find_reference(item)
            if ref is not None:
                return ref
    return None


def main():
    work, cuts, collector = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    final = cuts + 1
    problems = []

    acked = {}  # reference -> seq
    puts = {}  # (boot, prefix) -> highest acknowledged index
    for n in range(1, cuts + 1):
        for line in lines(work / f"boot-{n}" / "acks.log"):
            m = re.fullmatch(r"ack (\d+) (a\d+-\d+-\d+)", line)
            if m:
                acked[m.group(2)] = int(m.group(1))
                continue
            m = re.fullmatch(r"put (c\d+-\d+)-(\d+)", line)
            if m:
                key = (n, m.group(1))
                puts[key] = max(puts.get(key, -1), int(m.group(2)))

    # At every next boot the journal's head is at least the last acknowledged seq (the full
    # comparison, event by event, is after the last boot, with the agent stopped).
    for n in range(1, cuts + 1):
        top = max((seq for ref, seq in acked.items() if ref.startswith(f"a{n}-")), default=0)
        head = None
        for line in lines(work / f"boot-{n + 1}" / "results.log"):
            if '"check":"serving"' in line:
                head = int(json.loads(line)["detail"].split()[0])
        if head is None or head < top:
            problems.append(f"boot {n + 1}: journal head {head}, but seq {top} was acknowledged before the cut")

    # The journal after the last boot.
    journal = {}
    for line in lines(work / f"boot-{final}" / "results.log"):
        m = re.fullmatch(r"jev (\d+) (a\d+-\d+-\d+)", line)
        if m:
            journal[m.group(2)] = int(m.group(1))
    # The collector's store.
    at_collector = Counter()
    collector_seq = {}
    for line in lines(collector):
        if not line.strip():
            continue
        record = json.loads(line)
        ref = find_reference(record)
        if ref is not None and re.fullmatch(r"a\d+-\d+-\d+", ref):
            at_collector[ref] += 1
            collector_seq[ref] = record.get("seq")

    lost_journal = [r for r, s in acked.items() if journal.get(r) != s]
    lost_collector = [r for r, s in acked.items() if at_collector[r] != 1 or collector_seq.get(r) != s]
    for r in lost_journal[:10]:
        problems.append(f"event {r} acknowledged as seq {acked[r]}: journal has {journal.get(r)}")
    for r in lost_collector[:10]:
        problems.append(
            f"event {r} acknowledged as seq {acked[r]}: collector has it {at_collector[r]} times "
            f"(seq {collector_seq.get(r)})"
        )

    # The cache, read back at every boot after the one that wrote it.
    lost_cache = 0
    for later in range(2, final + 1):
        runs = {}
        for line in lines(work / f"boot-{later}" / "results.log"):
            m = re.fullmatch(r"cache prefix (c\d+-\d+) (\d+)", line)
            if m:
                runs[m.group(1)] = int(m.group(2))
            m = re.fullmatch(r"cache bad (\S+)", line)
            if m:
                problems.append(f"boot {later}: cache record {m.group(1)} read back another value")
        for (boot, prefix), top in puts.items():
            if boot >= later:
                continue
            if runs.get(prefix, 0) <= top:
                lost_cache += top + 1 - runs.get(prefix, 0)
                problems.append(
                    f"boot {later}: cache {prefix}-0..{top} acknowledged, only "
                    f"{runs.get(prefix, 0)} read back"
                )

    acked_puts = sum(top + 1 for top in puts.values())
    print(
        f"cuts {cuts}; events acknowledged {len(acked)}, lost from the journal "
        f"{len(lost_journal)}, not exactly once at the collector {len(lost_collector)}; "
        f"cache records acknowledged {acked_puts}, lost {lost_cache}; "
        f"journal events after the last boot {len(journal)}, at the collector {sum(at_collector.values())}"
    )
    if not acked:
        problems.append("no event was acknowledged: the workload did not run")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
