"""Summarises one agent's results in an Autobahn|Testsuite report (index.json).

Usage: python3 summary.py INDEX_JSON AGENT
Prints one line per behaviour, each case that is not OK or INFORMATIONAL (behaviour or close
behaviour), and a closing line 'N passed, M failed'; exits 1 if any case failed.
"""
import collections
import json
import sys

idx = json.load(open(sys.argv[1]))[sys.argv[2]]
for k, v in sorted(collections.Counter(r["behavior"] for r in idx.values()).items()):
    print(f"{k}: {v}")
good = ("OK", "INFORMATIONAL")


def key(case):
    return [int(p) for p in case.split(".")]


bad = sorted((c for c, r in idx.items() if r["behavior"] not in good or r["behaviorClose"] not in good), key=key)
for c in bad:
    print(f"  {c}: {idx[c]['behavior']} (close: {idx[c]['behaviorClose']})")
print(f"{len(idx) - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
