#!/usr/bin/env python3
"""Say which Swift files under Sources are over 500 lines and which functions are over 80.

A function is a `func`, `init`, `deinit`, `subscript` or a computed property's accessor block
starting at a declaration line; its length runs from that line to the line that closes its
body, found by counting braces outside strings and comments. Exits 1 when anything is over.
Usage: scripts/check-size.py [--max-file N] [--max-function N] [ROOT ...]
"""
import re
import sys
from pathlib import Path

DECL = re.compile(r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|private|fileprivate|internal|package|open|static|class|final|override|mutating|nonmutating|nonisolated|convenience|required|isolated|consuming|borrowing|dynamic)(?:\([^)]*\))?\s+)*(func\s+[^\s(<]+|init[?!]?|deinit|subscript)\b")


def strip(line, state):
    """Remove string literals and comments from one line; state carries block comments and multi-line strings."""
    out, i = [], 0
    while i < len(line):
        if state["block"]:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out)
            state["block"], i = False, end + 2
            continue
        if state["multi"]:
            end = line.find('"""', i)
            if end < 0:
                return "".join(out)
            state["multi"], i = False, end + 3
            continue
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"], i = True, i + 2
            continue
        if line.startswith('"""', i):
            state["multi"], i = True, i + 3
            continue
        if line[i] == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
            continue
        out.append(line[i])
        i += 1
    return "".join(out)


def functions(path):
    lines = path.read_text().splitlines()
    state = {"block": False, "multi": False}
    code = [strip(line, state) for line in lines]
    for start, line in enumerate(code):
        match = DECL.match(line)
        if not match:
            continue
        depth, opened = 0, False
        for end in range(start, len(code)):
            # A protocol requirement or a declaration without a body ends before any brace.
            if not opened and end > start and DECL.match(code[end]):
                break
            for char in code[end]:
                if char == "{":
                    depth, opened = depth + 1, True
                elif char == "}":
                    depth -= 1
            if opened and depth <= 0:
                yield match.group(1), start + 1, end - start + 1
                break


def main(argv):
    max_file, max_function, roots = 500, 80, []
    args = iter(argv)
    for arg in args:
        if arg == "--max-file":
            max_file = int(next(args))
        elif arg == "--max-function":
            max_function = int(next(args))
        else:
            roots.append(arg)
    over = []
    for root in roots or ["Sources"]:
        for path in sorted(Path(root).rglob("*.swift")):
            count = len(path.read_text().splitlines())
            if count > max_file:
                over.append(f"{path}: {count} lines (at most {max_file})")
            for name, line, length in functions(path):
                if length > max_function:
                    over.append(f"{path}:{line}: {name} is {length} lines (at most {max_function})")
    for item in over:
        print(item)
    if over:
        print(f"{len(over)} over the limits")
        return 1
    print(f"no file over {max_file} lines, no function over {max_function}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
