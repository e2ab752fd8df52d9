#!/usr/bin/env bash
# The data-layer benchmark (issue 19): starts a throwaway PostgreSQL, runs benchmarks/Idem.Benchmarks.DataLayer against
# it and a SQLite file, writes benchmarks/datalayer-results.md, stops the server. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. eng/servers.sh
WORK=$(mktemp -d /tmp/idem-datalayer.XXXXXX)
trap 'idem_stop_postgres; rm -rf "$WORK"' EXIT
idem_install_missing
idem_start_postgres "$WORK"
dotnet build benchmarks/Idem.Benchmarks.DataLayer/Idem.Benchmarks.DataLayer.csproj -c Release -nologo -v quiet >/dev/null
dotnet benchmarks/Idem.Benchmarks.DataLayer/bin/Release/net10.0/Idem.Benchmarks.DataLayer.dll \
  --postgres "$IDEM_PG_CONNECTION" --out benchmarks/datalayer-results.md "$@"
