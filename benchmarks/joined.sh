#!/usr/bin/env bash
# The joined-transaction benchmark (issue 20, item 5): starts a throwaway PostgreSQL, runs
# benchmarks/Idem.Benchmarks.Joined against it and a SQLite file (joined transaction vs a separate store on the same
# database, ratio in one run), writes benchmarks/joined-results.md and .json and the section of benchmarks/results.md,
# stops the server. About a minute on a quiet box.
set -euo pipefail
cd "$(dirname "$0")/.."
. eng/servers.sh
WORK=$(mktemp -d /tmp/idem-joined.XXXXXX)
trap 'idem_stop_postgres; rm -rf "$WORK"' EXIT
idem_install_missing
idem_start_postgres "$WORK"
dotnet build benchmarks/Idem.Benchmarks.Joined/Idem.Benchmarks.Joined.csproj -c Release -nologo -v quiet >/dev/null
dotnet benchmarks/Idem.Benchmarks.Joined/bin/Release/net10.0/Idem.Benchmarks.Joined.dll \
  --postgres "$IDEM_PG_CONNECTION" --out benchmarks/joined-results.md --results benchmarks/results.md "$@"
