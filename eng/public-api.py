"""Reads a build log on stdin and records the PublicApiAnalyzers' findings for one project directory (argv[1]):
RS0016 symbols are added to PublicAPI.Unshipped.txt, RS0017 symbols listed there are dropped. Called by public-api.sh."""
import os, re, sys

project_dir = os.path.realpath(sys.argv[1])
log = sys.stdin.read()
added, dropped, other = set(), set(), set()
for m in re.finditer(r"error (RS00\d\d|\w+): (?:Symbol '(.+?)')?.*?\[(.+?\.csproj)\]", log):
    code, symbol, project = m.group(1), m.group(2), m.group(3)
    if os.path.dirname(os.path.realpath(project)) != project_dir:
        continue
    if code == "RS0016" and symbol:
        added.add(symbol)
    elif code == "RS0017" and symbol:
        dropped.add(symbol)
    else:
        other.add(code)
path = os.path.join(project_dir, "PublicAPI.Unshipped.txt")
with open(path, encoding="utf-8") as f:
    lines = {l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")}
lines = (lines - dropped) | added
with open(path, "w", encoding="utf-8") as f:
    f.write("#nullable enable\n" + "".join(l + "\n" for l in sorted(lines, key=str.lower)))
print(f"  {len(added)} added, {len(dropped)} dropped" + (f"; other errors to fix by hand: {', '.join(sorted(other))}" if other else ""))
