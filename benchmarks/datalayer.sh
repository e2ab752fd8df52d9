#!/usr/bin/env bash
# The data-layer benchmark (issue 19): starts two throwaway PostgreSQL servers (the test suite's settings, and one with
# PostgreSQL's default durability for the cases that write), runs benchmarks/Idem.Benchmarks.DataLayer against
# them and a SQLite file, writes benchmarks/datalayer-results.md, stops the servers. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. eng/servers.sh
WORK=$(mktemp -d /tmp/idem-datalayer.XXXXXX)
chmod 755 "$WORK"
trap 'idem_stop_postgres; rm -rf "$WORK"' EXIT
idem_install_missing
idem_start_postgres "$WORK/fast"
idem_start_postgres_durable "$WORK/durable"
dotnet build benchmarks/Idem.Benchmarks.DataLayer/Idem.Benchmarks.DataLayer.csproj -c Release -nologo -v quiet >/dev/null
dotnet benchmarks/Idem.Benchmarks.DataLayer/bin/Release/net10.0/Idem.Benchmarks.DataLayer.dll \
  --postgres "$IDEM_PG_CONNECTION" --postgres-durable "$IDEM_PG_DURABLE_CONNECTION" --out benchmarks/datalayer-results.md "$@"
