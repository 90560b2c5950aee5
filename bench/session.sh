#!/usr/bin/env bash
# One side-by-side session of the benchmark kit (../shared/bench), the way
# the README's performance table is made: the ceiling and Postfix +
# OpenDKIM, then sealpost with and without DKIM, same N, concurrencies and
# repetitions; then the medians side by side, the ratios the performance
# goals are stated in, and whether each is met in this session. Only
# ratios within one session mean anything on a shared VM.
#
#   bench/session.sh                  # N=5000 REPS=3 WARM=300 CONCS="1 10 50"
#   N=2000 REPS=1 bench/session.sh    # a quick look
#   bench/session.sh -f DIR           # only the table, from a session's saved summaries
#
# Loopback only; every run is bounded by the kit (count and time). Takes
# about 14 minutes with the defaults on a 2-core VM. The summaries are
# kept in $SEALPOST_SESSION_DIR (default /tmp/sealpost-session).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kit=${BENCH_KIT:-$here/../../shared/bench}
out=${SEALPOST_SESSION_DIR:-/tmp/sealpost-session}
N=${N:-5000} REPS=${REPS:-3} WARM=${WARM:-300} CONCS=${CONCS:-"1 10 50"}

if [ "${1:-}" = -f ]; then
	out=${2:?usage: bench/session.sh -f DIR}
else
	[ -f "$kit/run.sh" ] || { echo "benchmark kit not found at $kit (set BENCH_KIT)" >&2; exit 1; }
	rm -rf "$out"; mkdir -p "$out"
	{
		echo "commit $(cd "$here/.." && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
		echo "start $(date -u +%FT%TZ)"
		echo "N=$N REPS=$REPS WARM=$WARM CONCS=$CONCS"
	} >"$out/session.txt"
	bash "$kit/sink.sh" stop >/dev/null 2>&1 || true
	N=$N REPS=$REPS WARM=$WARM CONCS=$CONCS bash "$kit/bench-all.sh" ceiling postfix-dkim-unix >"$out/kit.log" 2>&1 ||
		{ echo "the kit's ceiling or Postfix run failed: see $out/kit.log" >&2; exit 1; }
	bash "$kit/sink.sh" start >/dev/null
	trap 'bash "$kit/sink.sh" stop >/dev/null 2>&1 || true' EXIT
	for mode in dkim nodkim; do
		BENCH_KIT=$kit "$here/sealpost.sh" "$mode" -n "$N" -c "$CONCS" -r "$REPS" -W "$WARM" >"$out/sealpost-$mode.log" 2>&1 ||
			{ echo "sealpost's $mode run failed: see $out/sealpost-$mode.log" >&2; exit 1; }
	done
	echo "end $(date -u +%FT%TZ)" >>"$out/session.txt"
fi

# The kit prints, per configuration, a "# summary" block of lines:
#   label conc submit [min..max] e2e [min..max] relay_cpu peak_rss_MB ...
awk '
	/^# summary/ { in_summary = 1; next }
	in_summary && /^label/ { next }
	in_summary && NF >= 6 && $2 ~ /^[0-9]+$/ {
		print $1, $2, $5, $6, $7, $8
		next
	}
	{ in_summary = 0 }
' "$out"/*.log >"$out/medians.txt"
[ -s "$out/medians.txt" ] || { echo "no summaries in $out: see its logs" >&2; exit 1; }
cat "$out/session.txt" 2>/dev/null || true
# A saved session is read with the concurrencies it was run with.
saved=$(sed -n 's/.*CONCS=//p' "$out/session.txt" 2>/dev/null | head -1)
[ -z "$saved" ] || CONCS=$saved
# The kit goes on past a run that fails or a pre-run check that does not
# pass, and leaves it out of the medians: say which.
awk -F'\t' '
	/pre-run check failed|no successful runs/ { print "  " FILENAME ": " $0; next }
	NF == 19 && $2 ~ /^[0-9]+$/ && $19 != "ok" { print "  " FILENAME ": " $1 " c=" $2 " rep=" $3 ": " $19 }
' "$out"/*.log >"$out/failed.txt"
if [ -s "$out/failed.txt" ]; then
	echo
	echo "runs left out of the medians:"
	cat "$out/failed.txt"
fi
awk -v concs="$CONCS" '
	{ e2e[$1, $2] = $3; range[$1, $2] = $4; cpu[$1, $2] = $5; rss[$1, $2] = $6 }
	function ratio(a, b) { return a != "" && b > 0 ? a / b : -1 }
	# Unrounded, as judged: 0.146 must not print as 0.15 beside NOT MET.
	function show(r, unit) { return r < 0 ? "  no data" : sprintf("%6.3f%s", r, unit) }
	function verdict(r, goal) { return r < 0 ? "no data" : r >= goal ? "met" : "NOT MET" }
	END {
		n = split(concs, c, " ")
		printf "\n| configuration |"; for (i = 1; i <= n; i++) printf " c = %s |", c[i]; printf "\n|---|"
		for (i = 1; i <= n; i++) printf "---:|"; printf "\n"
		split("ceiling postfix-dkim-unix sealpost-dkim sealpost-nodkim", labels, " ")
		for (l = 1; l <= 4; l++) {
			printf "| %s |", labels[l]
			for (i = 1; i <= n; i++) if ((labels[l], c[i]) in e2e) printf " %s %s |", e2e[labels[l], c[i]], range[labels[l], c[i]]; else printf " no data |" 
			printf "\n"
		}
		printf "\nrelay CPU and peak RSS per run of N messages (median):\n"
		for (l = 2; l <= 4; l++) for (i = 1; i <= n; i++) if ((labels[l], c[i]) in e2e)
			printf "  %-18s c = %-3s %8s  %7s MB\n", labels[l], c[i], cpu[labels[l], c[i]], rss[labels[l], c[i]]
		printf "\ngoals (README, Performance):\n"
		for (i = 1; i <= n; i++) {
			r = ratio(e2e["sealpost-dkim", c[i]], e2e["postfix-dkim-unix", c[i]])
			printf "  c = %-3s sealpost DKIM / Postfix + OpenDKIM  %s (>= 3)     %s\n", c[i], show(r, "x"), verdict(r, 3)
		}
		for (i = 1; i <= n; i++) {
			if (c[i] == 1) continue
			r = ratio(e2e["sealpost-dkim", c[i]], e2e["ceiling", c[i]])
			printf "  c = %-3s sealpost DKIM / ceiling           %s  (>= 0.15)  %s\n", c[i], show(r, ""), verdict(r, 0.15)
			r = ratio(e2e["sealpost-nodkim", c[i]], e2e["ceiling", c[i]])
			printf "  c = %-3s sealpost no DKIM / ceiling        %s  (>= 0.30)  %s\n", c[i], show(r, ""), verdict(r, 0.30)
		}
	}
' "$out/medians.txt"
