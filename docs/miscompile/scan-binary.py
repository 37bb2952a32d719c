#!/usr/bin/env python3
"""Looks in a Swift binary for the shape of the miscompile of docs/MISCOMPILE.md.

usage: scan-binary.py BINARY [--list]

A class whose stored-property layout depends on a resilient type (CheckedContinuation, ...) keeps
its field offsets in globals ("direct field offset for C.f") that stay 0 until C's type metadata
accessor first runs. The miscompile is a load of such a global placed before that first call.
This flags every function that loads C's runtime field-offset global textually before its first
call to C's metadata accessor. It is a heuristic over `objdump -d` (x86-64): a hit is worth a
look (see MISCOMPILE.md for how to read one), no hit is no proof. --list also prints every
runtime field offset, i.e. every stored property that is exposed.
Needs objdump, nm and swift (for swift demangle) on PATH.
"""
import re
import subprocess
import sys


def run(command):
    return subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout


binary = sys.argv[1]
# Runtime field offsets: "direct field offset" globals in .bss (constant ones are in .data/.rodata).
runtime = set()
for line in run(f"nm '{binary}' | awk '$2 ~ /^[bB]$/ && $3 ~ /Wvd$/ {{print $3}}' | swift demangle --simplified").splitlines():
    match = re.match(r"direct field offset for (.+)\.(\w+)$", line.strip())
    if match:
        runtime.add((match.group(1), match.group(2)))
if "--list" in sys.argv:
    for cls, field in sorted(runtime):
        print(f"runtime field offset: {cls}.{field}")

function_re = re.compile(r"^[0-9a-f]+ <(.*)>:$")
offset_re = re.compile(r"<direct field offset for (.+?)\.(\w+)(?: : .*)?>")
accessor_re = re.compile(r"call .*<type metadata accessor for (.+?)>")
hits = []
function, loaded, accessed = None, {}, set()
disassembly = subprocess.Popen(f"objdump -d --no-show-raw-insn '{binary}' | swift demangle --simplified",
                               shell=True, stdout=subprocess.PIPE, text=True)
for line in disassembly.stdout:
    match = function_re.match(line.rstrip("\n"))
    if match:
        function, loaded, accessed = match.group(1), {}, set()
        continue
    match = offset_re.search(line)
    if match and "mov" in line and (match.group(1), match.group(2)) in runtime and match.group(1) not in accessed:
        loaded.setdefault(match.group(1), (line.split(":")[0].strip(), match.group(2)))
    match = accessor_re.search(line)
    if match:
        cls = match.group(1)
        if cls in loaded and cls not in accessed:
            hits.append((function, cls) + loaded[cls])
        accessed.add(cls)
disassembly.wait()
for function, cls, address, field in hits:
    print(f"SUSPECT {cls}.{field}: offset global loaded at 0x{address}, before the first call to "
          f"{cls}'s metadata accessor, in {function[:200]}")
print(f"scan-binary: {len(runtime)} runtime field offsets, {len(hits)} suspect functions", file=sys.stderr)
