#!/usr/bin/env python3
"""Lists functions in src/ longer than 80 lines that do not say why they must be.

A function may be longer when the line just above its signature (or its doc comment) holds a
comment starting `// Long:` with the reason. Exit status 1 when any function breaks the rule.
Run by scripts/test.sh beside fmt and clippy: `python3 scripts/check-fn-length.py`.
"""

import pathlib
import re
import sys

LIMIT = 80
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip(line, state):
    """The line without strings, chars and comments; `state` carries block comments."""
    out, i = [], 0
    while i < len(line):
        if state["block"]:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out)
            state["block"] = False
            i = end + 2
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        if c == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
            continue
        if c == "'" and re.match(r"'(\\.|[^\\'])'", line[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", line[i:]).group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def excused(lines, at):
    """A `// Long:` comment among the attributes and doc lines just above the signature."""
    j = at - 1
    while j >= 0 and re.match(r"^\s*(///|#\[|// )", lines[j]):
        if "// Long:" in lines[j]:
            return True
        j -= 1
    return False


def check(path):
    lines = path.read_text().splitlines()
    found = []
    state = {"block": False}
    cleaned = [strip(l, state) for l in lines]
    for n, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened, end = 0, False, None
        for k in range(n, len(lines)):
            text = cleaned[k]
            if not opened and ";" in text and "{" not in text:
                break  # a declaration without a body
            for ch in text:
                if ch == "{":
                    depth += 1
                    opened = True
                elif ch == "}":
                    depth -= 1
            if opened and depth == 0:
                end = k
                break
        if end is None:
            continue
        length = end - n + 1
        if length > LIMIT and not excused(lines, n):
            found.append((path, n + 1, m.group(6), length))
    return found


def main():
    root = pathlib.Path(__file__).resolve().parent.parent / "src"
    found = [f for p in sorted(root.rglob("*.rs")) for f in check(p)]
    for path, line, name, length in found:
        print(f"{path.relative_to(root.parent)}:{line}: fn {name} is {length} lines (limit {LIMIT}; "
              "split it, or say why above it with `// Long: ...`)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
