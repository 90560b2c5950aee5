#!/usr/bin/env bash
# Measure sealpost with the shared benchmark kit (../shared/bench): build the
# binary, configure it like a production relay (spool with fsync, policy on,
# verified STARTTLS + AUTH to the kit's sink), and run the kit's load runner
# against it. Loopback only; every run is bounded by the kit (-n, -T).
#
#   bench/sealpost.sh [dkim|nodkim] [run.sh options...]
#   e.g. N=5000 bench/sealpost.sh dkim -n 5000 -c "1 10 50" -r 3 -W 500
#
# With SEALPOST_BENCH_SETUP_ONLY=1 it only builds and configures (in
# $SEALPOST_BENCH_WORK, default /tmp/sealpost-bench): bench/queue-scale.sh
# uses that.
#
# It logs at warn without log.audit_file unless SEALPOST_BENCH_LOG_LEVEL
# and SEALPOST_BENCH_AUDIT_FILE say otherwise: the two audit records of a
# message cost about 13 µs (BenchmarkAuditRecord in relay/).
#
# The kit's sink must be running (../shared/bench/sink.sh start).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kit=${BENCH_KIT:-$here/../../shared/bench}
[ -x "$kit/run.sh" ] || [ -f "$kit/run.sh" ] || { echo "benchmark kit not found at $kit (set BENCH_KIT)" >&2; exit 1; }
mode=${1:-dkim}; shift || true
work=${SEALPOST_BENCH_WORK:-/tmp/sealpost-bench}
port=${SEALPOST_BENCH_PORT:-10030}
rm -rf "$work"; mkdir -p "$work"
(cd "$here/.." && CGO_ENABLED=0 go build ${SEALPOST_BUILD_TAGS:+-tags "$SEALPOST_BUILD_TAGS"} -o "$work/sealpost" .)
printf 'benchpass\n' >"$work/password"; chmod 600 "$work/password"

dkim='[policy]
allowed_from_domains = ["example.com"]'
if [ "$mode" = dkim ]; then
	"$work/sealpost" dkim keygen -domain example.com -selector bench -out "$work/dkim.key" >/dev/null
	dkim="[[dkim.keys]]
domain = \"example.com\"
selector = \"bench\"
key_file = \"$work/dkim.key\""
fi
cat >"$work/relay.toml" <<TOML
hostname = "relay.bench.test"
run_as_root = true

[listen]
addrs = ["127.0.0.1:$port"]
socket = ""
control_socket = "$work/control.sock"
max_connections = 200
max_connections_per_client = 200

[upstream]
addr = "127.0.0.1:20025"
tls = "starttls"
ca_file = "/tmp/relaybench/sink-ca.pem"
username = "bench"
password_file = "$work/password"

[spool]
dir = "$work/spool"

# smtp-source sends every message from one sender: the rate limits would
# (rightly) throttle it, so they are off for the measurement.
[limits]
per_sender = { rate = "0", burst = 1 }
per_client = { rate = "0", burst = 1 }

[log]
format = "json"
level = "${SEALPOST_BENCH_LOG_LEVEL:-warn}"
${SEALPOST_BENCH_AUDIT_FILE:+audit_file = \"$SEALPOST_BENCH_AUDIT_FILE\"}

$dkim
TOML
[ -z "${SEALPOST_BENCH_SETUP_ONLY:-}" ] || exit 0
"$work/sealpost" serve -config "$work/relay.toml" 2>"$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 50); do
	(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
	sleep 0.1
done
# The spool's own listing: body/ also holds files made ready for messages
# to come (empty, or delivered messages' kept for reuse).
queue_empty="test \"\$('$work/sealpost' queue list -json -config '$work/relay.toml' 2>/dev/null)\" = '[]'"
bash "$kit/run.sh" -p "$port" -l "sealpost-$mode" -P "$pid" -q "$queue_empty" "$@"
