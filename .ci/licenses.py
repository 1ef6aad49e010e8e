#!/usr/bin/env python3
"""Offline licence check of the dependency tree (what `cargo deny check licenses` does, without
its advisory database, which these machines cannot fetch).

Reads `cargo metadata` for the packages the workspace really builds on this platform (normal,
build and dev dependencies, every feature), evaluates each package's SPDX expression against
the allow-list below, and fails naming every package whose licence is missing or not allowed.
"""
import json
import re
import subprocess
import sys

# Permissive licences compatible with shipping shroud as MIT OR Apache-2.0.
ALLOWED = {
    "MIT", "MIT-0", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause",
    "BSD-3-Clause", "ISC", "Zlib", "0BSD", "BSL-1.0", "CC0-1.0", "Unicode-3.0",
    "Unicode-DFS-2016", "Unlicense", "CDLA-Permissive-2.0", "OpenSSL",
}


def tokens(expr):
    return re.findall(r"\(|\)|[^\s()]+", expr.replace("/", " OR "))


def parse(ts):
    """expr := term (OR term)*; term := factor (AND factor)*; factor := ID [WITH ID] | (expr)"""

    def expr(i):
        v, i = term(i)
        while i < len(ts) and ts[i] == "OR":
            w, i = term(i + 1)
            v = v or w
        return v, i

    def term(i):
        v, i = factor(i)
        while i < len(ts) and ts[i] == "AND":
            w, i = factor(i + 1)
            v = v and w
        return v, i

    def factor(i):
        if ts[i] == "(":
            v, i = expr(i + 1)
            return v, i + 1
        name = ts[i]
        i += 1
        if i < len(ts) and ts[i] == "WITH":
            name = f"{name} WITH {ts[i + 1]}"
            i += 2
        return name in ALLOWED, i

    value, end = expr(0)
    return value and end == len(ts)


def self_test():
    """The evaluator itself: a copyleft licence is refused unless an OR offers another."""
    cases = {"MIT": True, "GPL-3.0": False, "MIT OR GPL-3.0": True, "MIT AND GPL-3.0": False,
             "(MIT OR Apache-2.0) AND Unicode-3.0": True, "MIT/Apache-2.0": True,
             "ISC AND (GPL-2.0 OR LGPL-2.1)": False, "Apache-2.0 WITH LLVM-exception": True}
    for expr, want in cases.items():
        assert parse(tokens(expr)) == want, expr


def main():
    self_test()
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features",
         "--filter-platform", "x86_64-unknown-linux-gnu"]))
    used = {n["id"] for n in meta["resolve"]["nodes"]}
    members = set(meta["workspace_members"])
    bad, seen = [], 0
    for p in meta["packages"]:
        if p["id"] not in used:
            continue
        seen += 1
        lic = p.get("license")
        if not lic:
            bad.append(f"{p['name']} {p['version']}: no SPDX licence")
        elif not parse(tokens(lic)):
            bad.append(f"{p['name']} {p['version']}: {lic}")
        if p["id"] in members and lic != "MIT OR Apache-2.0":
            bad.append(f"{p['name']}: workspace crates are MIT OR Apache-2.0, not {lic}")
    if bad:
        print("licence check failed:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"licences: {seen} packages, all allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
