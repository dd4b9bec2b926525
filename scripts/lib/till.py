#!/usr/bin/env python3
"""A POS application's side of the agent's local API, for scripts (the backup drill).

till.py SOCKET traffic N TAG      append N business events (audit.record), each durable when answered
till.py SOCKET shipped SECONDS    wait until the collector acknowledged the journal's head; print it
till.py SOCKET head               print the journal's head seq
till.py - seqs HEAD               read `posguard-collector query` lines on stdin; check that seqs
                                  1..=HEAD are each stored exactly once
"""
import json
import socket
import sys
import time


def call(path, method, params):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        f = s.makefile("rw")
        f.write(json.dumps({"v": 1, "id": 1, "method": method, "params": params}) + "\n")
        f.flush()
        return json.loads(f.readline())


def journal(path):
    return call(path, "status", {})["result"]["journal"]


def main():
    path, cmd = sys.argv[1], sys.argv[2]
    if cmd == "traffic":
        n, tag = int(sys.argv[3]), sys.argv[4]
        for i in range(n):
            a = call(path, "audit.record", {"action": "sale", "amount_minor": 100 + i,
                                             "currency": "EUR", "reference": f"drill {tag} {i}"})
            if not a.get("ok"):
                sys.exit(f"audit.record refused: {a}")
    elif cmd == "shipped":
        deadline = time.monotonic() + float(sys.argv[3])
        while True:
            j = journal(path)
            if j["shipped_seq"] == j["head_seq"]:
                print(j["head_seq"])
                return
            if time.monotonic() > deadline:
                sys.exit(f"the journal was not shipped within {sys.argv[3]} s: {j}")
            time.sleep(0.2)  # polling interval
    elif cmd == "head":
        print(journal(path)["head_seq"])
    elif cmd == "seqs":
        head = int(sys.argv[3])
        seqs = [json.loads(line)["seq"] for line in sys.stdin if line.strip()]
        twice = sorted({s for s in seqs if seqs.count(s) > 1})
        missing = sorted(set(range(1, head + 1)) - set(seqs))
        if twice or missing or len(seqs) != head:
            sys.exit(f"stored {len(seqs)} records for head {head}; twice: {twice[:20]}, missing: {missing[:20]}")
        print(f"seqs 1..{head} stored, each once")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
