#!/usr/bin/env bash
# Records the public API of shipped packages in their PublicAPI.Unshipped.txt, with the PublicApiAnalyzers' own code
# diagnostics (RS0016: "Symbol '…' is not part of the declared public API"), so a build that failed on RS0016 builds again.
# Review the diff: every added line is a promise to users.
#
#   eng/public-api.sh                      every src/*/*.csproj
#   eng/public-api.sh src/Idem.Http ...    the given project directories (or .csproj files)
#   eng/public-api.sh --ship               at a release: moves every Unshipped entry into Shipped (*REMOVED* lines
#                                          delete theirs from Shipped) and empties Unshipped
#
# A symbol removed or changed on purpose fails with RS0017 ("… is part of the declared API, but is either not public
# or could not be found"): delete its line from PublicAPI.Unshipped.txt, or, when it is in PublicAPI.Shipped.txt, add
# the same line prefixed with *REMOVED* to PublicAPI.Unshipped.txt; then run this script for the new signature.
set -euo pipefail
cd "$(dirname "$0")/.."

header='#nullable enable'

ship() {
  local dir=$1 shipped=$1/PublicAPI.Shipped.txt unshipped=$1/PublicAPI.Unshipped.txt
  python3 - "$shipped" "$unshipped" <<'PY'
import sys
shipped_path, unshipped_path = sys.argv[1], sys.argv[2]
def entries(path):
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
shipped = set(entries(shipped_path))
for line in entries(unshipped_path):
    if line.startswith("*REMOVED*"):
        shipped.discard(line[len("*REMOVED*"):])
    else:
        shipped.add(line)
with open(shipped_path, "w", encoding="utf-8") as f:
    f.write("#nullable enable\n" + "".join(l + "\n" for l in sorted(shipped, key=str.lower)))
with open(unshipped_path, "w", encoding="utf-8") as f:
    f.write("#nullable enable\n")
PY
}

ship_all=false
projects=()
for arg in "$@"; do
  case "$arg" in
    --ship) ship_all=true ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *.csproj) projects+=("$arg") ;;
    *) projects+=("$(ls "${arg%/}"/*.csproj)") ;;
  esac
done
[ ${#projects[@]} -gt 0 ] || projects=(src/*/*.csproj)

for project in "${projects[@]}"; do
  dir=$(dirname "$project")
  for file in PublicAPI.Shipped.txt PublicAPI.Unshipped.txt; do
    [ -f "$dir/$file" ] || echo "$header" > "$dir/$file"
  done
  if $ship_all; then
    ship "$dir"
    echo "$dir: Unshipped moved into Shipped"
    continue
  fi
  echo "$dir: recording its public API from the build's RS0016/RS0017 diagnostics"
  # One build, then the analyzer's own symbol text goes into Unshipped (RS0016 adds, RS0017 drops a stale Unshipped
  # line). `dotnet format analyzers --diagnostics RS0016` does the same through the code fix, but was seen to exit 0
  # without recording anything when the workspace failed to load, so the build's output is the source of truth here.
  { dotnet build "$project" -c Release -nologo -v quiet 2>&1 || true; } | python3 "$(dirname "$0")/public-api.py" "$dir"
done
