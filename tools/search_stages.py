#!/usr/bin/env python3
"""Per stage of the space, a search's margins and decisions over time, from its search_log.csv.

A margin is an indicator's norm minus its threshold (nas/README.md): positive keeps the candidate
(5x5 kernel, expansion 6, the layer itself), and the threshold moves only through sigma'(margin), so
a margin far from 0 means that indicator cannot change. Usage:

    tools/search_stages.py RUN/search_log.csv [--space nas/spaces/cifar10.json] [--every EPOCHS]

Prints, at every EPOCHS (default 1) and at the last logged step: per stage (the space's searchable
blocks) the smallest and largest margin of each indicator kind, and the stage's decoded layers.
"""
import argparse
import csv
import json
import math
import sys

KINDS = [("k5", "5x5"), ("e6", "e6"), ("skip", "keep"), ("se", "se")]


def stages_of(space_path):
    """[(name, [layer indices])] for the searchable blocks, in order."""
    with open(space_path) as f:
        space = json.load(f)
    out, layer = [], 0
    for b in space["blocks"]:
        if b.get("type") != "searchable":
            continue
        n = int(b.get("repeats", 1))
        out.append(("c%d s%d" % (b["channels"], b.get("stride", 1)), list(range(layer, layer + n))))
        layer += n
    return out


def decoded(row, i):
    """The layer's choice as a search prints it (skip, or kernel-expansion)."""
    if row.get("l%d_d_skip" % i) == "0":
        return "skip"
    k = "5x5" if row.get("l%d_d_k5" % i) == "1" else "3x3"
    e = "6" if row.get("l%d_d_e6" % i) == "1" else "3"
    se = "+se" if row.get("l%d_d_se" % i) == "1" else ""
    return "%s-%s%s" % (k, e, se)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log")
    ap.add_argument("--space", default="nas/spaces/cifar10.json")
    ap.add_argument("--every", type=float, default=1.0, help="epochs between reports")
    a = ap.parse_args()
    try:
        with open(a.log) as f:
            rows = list(csv.DictReader(f))
        stages = stages_of(a.space)
    except (OSError, ValueError, KeyError) as e:
        sys.exit("search_stages: %s" % e)
    if not rows:
        sys.exit("search_stages: %s has no steps" % a.log)
    picks, next_epoch = [], 0.0
    for r in rows:
        if float(r["epoch"]) >= next_epoch:
            picks.append(r)
            next_epoch = math.floor(float(r["epoch"]) / a.every + 1) * a.every
    if picks[-1] is not rows[-1]:
        picks.append(rows[-1])
    for r in picks:
        print("step %s, epoch %.2f: R %.3f ms decoded (%s ms soft), ce %s" %
              (r["step"], float(r["epoch"]), float(r["R_decoded"]), r["R"], r["ce"]))
        for name, layers in stages:
            parts = []
            for kind, label in KINDS:
                m = [float(r["l%d_m_%s" % (i, kind)]) for i in layers if r.get("l%d_m_%s" % (i, kind))]
                if m:
                    parts.append("%s %.2f..%.2f" % (label, min(m), max(m)))
            print("  %-10s margins %-44s  %s" % (name, ", ".join(parts), " ".join(decoded(r, i) for i in layers)))


if __name__ == "__main__":
    main()
