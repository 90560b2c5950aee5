#!/usr/bin/env bash
# Queue scaling of the running daemon: with the upstream (the kit's sink)
# down, submit N messages; restart sealpost and time how soon it accepts
# again, how long `sealpost queue list` takes and how much memory the
# daemon holds; then bring the upstream back and measure how fast the
# queue drains. Loopback only; every wait is bounded.
#
#   N=100000 bench/queue-scale.sh [dkim|nodkim]
#
# RESTARTS=k restarts it k times (and lists the queue after each), for
# more than one sample of the restart from one filling.
#
# Uses ../shared/bench (sink.sh, smtp-source) and bench/sealpost.sh's
# production-like configuration. Stops the kit's sink while filling.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kit=${BENCH_KIT:-$here/../../shared/bench}
mode=${1:-dkim}
n=${N:-100000}
conc=${CONC:-50}
work=${SEALPOST_BENCH_WORK:-/tmp/sealpost-queue-scale}
port=${SEALPOST_BENCH_PORT:-10031}
export SEALPOST_BENCH_WORK=$work SEALPOST_BENCH_PORT=$port
SEALPOST_BENCH_SETUP_ONLY=1 bash "$here/sealpost.sh" "$mode"
bin=$work/sealpost cfg=$work/relay.toml
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mb() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
wait_accepting() {
	for _ in $(seq 400); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.005
	done
	return 1
}
sink_count() { curl -s http://127.0.0.1:20080/stats | sed -n 's/.*"count": *\([0-9]*\).*/\1/p'; }

pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

bash "$kit/sink.sh" stop >/dev/null 2>&1 || true
"$bin" serve -config "$cfg" 2>"$work/serve.log" & pid=$!
wait_accepting || { echo "sealpost did not start" >&2; exit 1; }
t0=$(now)
smtp-source -s "$conc" -m "$n" -l 4096 -f bench@example.com -t sink@example.net "127.0.0.1:$port"
t1=$(now)
echo "filled: $n messages at c=$conc in $(secs "$t0" "$t1") s (upstream down); daemon RSS $(rss_mb "$pid") MB, peak $(hwm_mb "$pid") MB"
# grep -c counts 0 with status 1, which pipefail and set -e would take
# for a failure.
count_queued() { "$bin" queue list -config "$cfg" | { grep -c '^[0-9]\{8\}T' || true; }; }
queued=$(count_queued)
echo "queued: $queued"
listed=$queued

for _ in $(seq "${RESTARTS:-1}"); do
	kill -TERM "$pid"; wait "$pid" || true
	t0=$(now)
	"$bin" serve -config "$cfg" 2>>"$work/serve.log" & pid=$!
	wait_accepting || { echo "sealpost did not restart" >&2; exit 1; }
	t1=$(now)
	echo "restart: accepting after $(secs "$t0" "$t1") s"
	t0=$(now)
	listed=$(count_queued)
	t1=$(now)
	echo "queue list: $listed messages in $(secs "$t0" "$t1") s"
	sleep 1
	echo "after restart: daemon RSS $(rss_mb "$pid") MB"
done

bash "$kit/sink.sh" start >/dev/null 2>&1
curl -s "http://127.0.0.1:20080/reset" >/dev/null
t0=$(now)
"$bin" queue flush -config "$cfg" >/dev/null
deadline=$(( $(date +%s) + 3600 ))
while :; do
	c=$(sink_count); c=${c:-0}
	[ "$c" -ge "$listed" ] && break
	[ "$(date +%s)" -lt "$deadline" ] || { echo "drain: gave up after an hour at $c of $listed" >&2; exit 1; }
	sleep 0.2
done
t1=$(now)
d=$(secs "$t0" "$t1")
echo "drain: $listed messages in $d s = $(awk -v n="$listed" -v d="$d" 'BEGIN { printf "%.0f", n / d }') msg/s; daemon peak RSS $(hwm_mb "$pid") MB"
