#!/bin/sh
# run.sh - benchmark hybridmoe-server over loopback: start it, run wrk (non-streaming
# completions) and bench/server/sse_bench (streaming: time to first token, inter-token
# latency) at several concurrencies, measure its resident memory (idle, per concurrent
# request, after 10,000 requests), stop it, and print markdown tables on stdout. Also
# writes the raw results and PNG plots (gnuplot). Never fails because of a figure: it
# exits non-zero only when it cannot run at all (missing binary, server does not start).
#
#   make bench-server                                 # from a build directory
#   HM_BUILDDIR=/path/to/build HM_SRCDIR=/path/to/src sh bench/server/run.sh
#
# Environment (all optional):
#   BENCH_MODEL       model to serve (default: $HM_SRCDIR/models/default.gguf if present,
#                     else $HM_BUILDDIR/models/tiny.gguf, generated if missing)
#   BENCH_CONNS       concurrencies (default "1 8 32 64")
#   BENCH_DURATION    seconds per wrk and per sse_bench run (default 20)
#   BENCH_MAX_TOKENS  max_tokens of the throughput/latency requests (default 32)
#   BENCH_PROMPT      the prompt of every request (default: a line of Romeo and Juliet)
#   BENCH_MEM_REQUESTS  requests of the memory soak, half streaming (default 10000)
#   BENCH_MEM_TOKENS  max_tokens of the soak requests (default 8)
#   BENCH_OUT         directory for raw results and the server log (default
#                     $HM_BUILDDIR/bench-server)
#   BENCH_IMGDIR      where the PNG plots go (default $HM_SRCDIR/docs/img; empty = none)
#   BENCH_SERVER_OPTS extra flags for hybridmoe-server (appended, so they win); the
#                     script's arguments (make bench-server BENCH_SERVER_ARGS=...) too
#   BENCH_ENGINE      1 (default): first run bench/bench_engine (if built) on the same model
#                     for the engine's own decode tokens/s at each batch, the limit the
#                     server's tokens/s should approach; 0 = skip. BENCH_ENGINE_REPS: its
#                     --reps (default 5; it keeps the best)
#   BENCH_WRK_THREADS wrk threads (default 1: the load generator shares the CPU)
#   BENCH_REPEAT      runs per tool and concurrency (default 1); the tables keep the run
#                     with the most tokens/s (least disturbed on a shared machine), and
#                     the error counts add up all runs
set -u
extra="${BENCH_SERVER_OPTS:-} $*"

builddir=${HM_BUILDDIR:-.}
srcdir=${HM_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
conns=${BENCH_CONNS:-"1 8 32 64"}
dur=${BENCH_DURATION:-20}
maxtok=${BENCH_MAX_TOKENS:-32}
prompt=${BENCH_PROMPT:-"ROMEO: But soft, what light through yonder window breaks? It is the east, and"}
memreq=${BENCH_MEM_REQUESTS:-10000}
memtok=${BENCH_MEM_TOKENS:-8}
out=${BENCH_OUT:-$builddir/bench-server}
imgdir=${BENCH_IMGDIR-$srcdir/docs/img}
wrkthreads=${BENCH_WRK_THREADS:-1}
repeat=${BENCH_REPEAT:-1}
server="$builddir/hybridmoe-server"
sse="$builddir/bench/server/sse_bench"
lua="$srcdir/bench/server/completions.lua"
maxconn=1
for c in $conns; do [ "$c" -gt "$maxconn" ] && maxconn=$c; done
# Server limits for the load: every request of the largest load runs at once (so 32
# concurrent requests are one batch of 32), nothing is rejected, no per-IP limit (every
# loopback client is 127.0.0.1).
limits="--max_running $maxconn --step_tokens 256 --queue_size 256 --max_connections 512 \
--per_ip_connections 0 --request_timeout 600"

die() { echo "run.sh: $*" >&2; exit 1; }
for exe in "$server" "$sse"; do
    [ -x "$exe" ] || die "$exe not built (run 'make bench-server')"
done
command -v wrk >/dev/null 2>&1 || die "wrk not found (apt-get install wrk)"
command -v curl >/dev/null 2>&1 || die "curl not found"
mkdir -p "$out" || die "cannot create $out"

if [ -n "${BENCH_MODEL:-}" ]; then
    model=$BENCH_MODEL
elif [ -s "$srcdir/models/default.gguf" ]; then
    model="$srcdir/models/default.gguf"
else
    model="$builddir/models/tiny.gguf"
    if [ ! -s "$model" ]; then
        mkdir -p "$builddir/models"
        "$builddir/hybridmoe" mkmodel --preset tiny --seed 1 -q -o "$model" ||
            die "cannot generate $model"
    fi
fi
[ -s "$model" ] || die "model $model not found"
model_abs=$(readlink -f "$model")

# ---- helpers ------------------------------------------------------------------------
kv() { # kv KEY LINE -> value of KEY=value in a RESULT line
    printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1
}
status_kb() { # status_kb FIELD -> kB from /proc/PID/status
    sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$pid/status" 2>/dev/null
}
model_kb() { # resident kB of the model file's mappings (/proc/PID/smaps)
    awk -v f="$model_abs" 'index($0, f) && $NF == f { on = 1; next }
        on && /^Rss:/ { kb += $2; on = 0 } END { print kb + 0 }' "/proc/$pid/smaps" 2>/dev/null
}
mem_row() { # mem_row LABEL: one row of the memory table, read now
    r=$(status_kb VmRSS); f=$(status_kb RssFile); a=$(status_kb RssAnon); m=$(model_kb)
    echo "| $1 | $(mib "$r") | $(mib "$m") | $(mib $((f - m))) | $(mib "$a") |"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null; }
metric() { # metric NAME -> value from a saved /metrics scrape ($1 = file)
    awk -v n="$2" '$1 == n { print $2; exit }' "$1"
}
scrape() { curl -s --max-time 10 "http://127.0.0.1:$port/metrics" >"$1"; }
delta() { awk -v a="$(metric "$1" "$3")" -v b="$(metric "$2" "$3")" 'BEGIN { print b - a }'; }
reset_hwm() { echo 5 >"/proc/$pid/clear_refs" 2>/dev/null; }
alive() { kill -0 "$pid" 2>/dev/null; }
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)

# ---- the limit: the engine alone, before the server starts -----------------------------
engine="$builddir/bench/bench_engine"
: >"$out/engine.dat"
if [ "${BENCH_ENGINE:-1}" != 0 ] && [ -x "$engine" ]; then
    echo "run.sh: bench_engine on $model" >&2
    "$engine" --batches "$(echo $conns | tr ' ' ',')" --no-limits --no-memory --no-sampler \
        --reps "${BENCH_ENGINE_REPS:-5}" --prompt 32 --decode "$maxtok" "$model=served" >"$out/engine.md" 2>"$out/engine.err"
    # adaptive rows: | adaptive | batch | c_req | w | experts | prefill | decode tok/s | ...
    awk -F'|' '/decode tok\/s/ { on = 1; next } /^$/ { on = 0 }
        on && $2 ~ /adaptive/ { b = $3; d = $8; gsub(/ /, "", b); gsub(/ /, "", d);
        print b, d }' "$out/engine.md" >"$out/engine.dat"
fi

# ---- start the server ----------------------------------------------------------------
log="$out/server.log"
# shellcheck disable=SC2086
"$server" --model "$model" --host 127.0.0.1 --port 0 $limits $extra \
    >"$log" 2>&1 &
pid=$!
port=
i=0
while [ $i -lt 300 ]; do
    port=$(sed -n 's/.*ready: listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" |
           head -n1)
    [ -n "$port" ] && break
    alive || { cat "$log" >&2; die "the server exited at startup"; }
    sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || { kill "$pid"; die "the server did not get ready in 30 s"; }
stop_server() { alive && kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
trap 'stop_server' EXIT INT TERM

url="http://127.0.0.1:$port"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
mem_start=$(mem_row "started, before any request")
model_bytes=$(stat -c %s "$model")
echo "run.sh: server pid $pid on $url, model $model" >&2

# warm-up: touches every weight page and the request paths once
"$sse" -p "$port" -c 1 -n 8 -m "$maxtok" --prompt "$prompt" >/dev/null 2>&1
# one request as in the runs, for its usage (prompt tokens, KV bytes of the sequence)
esc=$(printf '%s' "$prompt" | sed 's/\\/\\\\/g; s/"/\\"/g')
usage=$(curl -s --max-time 60 "$url/v1/completions" -H 'Content-Type: application/json' \
        -d "{\"prompt\":\"$esc\",\"max_tokens\":$maxtok,\"temperature\":0.8,\"seed\":1}" |
        sed -n 's/.*"usage":\(.*\)/\1/p')
ujson() { printf '%s' "$usage" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -n1; }
mem_warm=$(mem_row "after 8 warm-up requests")

# ---- throughput (wrk, not streaming) and streaming latency (sse_bench) -----------------
# Each run prints one line of wrk.dat / sse.dat (columns: see plot.gp and the report).
wrk_once() { # wrk_once CONNS
    t=$wrkthreads; [ "$t" -gt "$1" ] && t=$1
    scrape "$out/m0"; ticks0=$(cpu_ticks); rss0=$(status_kb VmRSS); reset_hwm
    echo "run.sh: wrk -c $1 for ${dur}s" >&2
    res=$(wrk -t"$t" -c"$1" -d"${dur}s" --latency --timeout 120s -s "$lua" "$url" \
          -- max_tokens="$maxtok" temperature=0.8 prompt="$prompt" 2>&1 | tee -a "$out/wrk.txt" |
          grep '^RESULT' | tail -n1)
    hwm=$(status_kb VmHWM); ticks1=$(cpu_ticks); scrape "$out/m1"
    [ -n "$res" ] || res="RESULT rps=0 tok_s=0 non2xx=-1"
    steps=$(delta "$out/m0" "$out/m1" hybridmoe_step_batch_size_count)
    seqs=$(delta "$out/m0" "$out/m1" hybridmoe_step_batch_size_sum)
    gen=$(delta "$out/m0" "$out/m1" hybridmoe_generated_tokens_total)
    secs=$(kv duration_s "$res")
    echo "$1 $(kv rps "$res") $(kv tok_s "$res") $(kv lat_p50_ms "$res") $(kv lat_p90_ms "$res") \
$(kv lat_p99_ms "$res") $(kv non2xx "$res") $(kv socket_errors "$res") $(kv timeouts "$res") \
$(awk -v s="$seqs" -v n="$steps" 'BEGIN { printf "%.1f", (n > 0 ? s / n : 0) }') \
$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$hz" -v d="${secs:-1}" \
      'BEGIN { printf "%.2f", (b - a) / hz / d }') \
$(awk -v g="$gen" -v d="${secs:-1}" 'BEGIN { printf "%.1f", g / d }') $rss0 $hwm \
$(kv requests "$res") $(cut -d' ' -f1 /proc/loadavg)"
}
sse_once() { # sse_once CONNS
    ticks0=$(cpu_ticks); rss0=$(status_kb VmRSS); reset_hwm
    echo "run.sh: sse_bench -c $1 for ${dur}s" >&2
    res=$("$sse" -p "$port" -c "$1" -d "$dur" -m "$maxtok" --prompt "$prompt" 2>>"$out/sse.txt" |
          tee -a "$out/sse.txt" | grep '^RESULT' | tail -n1)
    hwm=$(status_kb VmHWM); ticks1=$(cpu_ticks)
    [ -n "$res" ] || res="RESULT rps=0 tok_s=0 errors=-1"
    secs=$(kv duration_s "$res")
    echo "$1 $(kv rps "$res") $(kv tok_s "$res") $(kv ttft_p50_ms "$res") \
$(kv ttft_p90_ms "$res") $(kv ttft_p99_ms "$res") $(kv itl_p50_ms "$res") \
$(kv itl_p90_ms "$res") $(kv itl_p99_ms "$res") $(kv tpot_p50_ms "$res") \
$(kv tpot_p90_ms "$res") $(kv tpot_p99_ms "$res") $(kv errors "$res") \
$(kv text_events_per_token "$res") \
$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$hz" -v d="${secs:-1}" \
      'BEGIN { printf "%.2f", (b - a) / hz / d }') $rss0 $hwm $(kv requests "$res") \
$(kv lat_p50_ms "$res") $(kv lat_p99_ms "$res") $(cut -d' ' -f1 /proc/loadavg)"
}
# best_of TOOL: runs TOOL_once BENCH_REPEAT times per concurrency; every run goes to
# TOOL-all.dat, the one with the most generated tokens/s (least disturbed by other
# processes) to TOOL.dat.
best_of() {
    : >"$out/$1.dat"
    : >"$out/$1-all.dat"
    : >"$out/$1.txt"
    for c in $conns; do
        best=""
        r=0
        while [ $r -lt "$repeat" ]; do
            line=$("$1_once" "$c")
            echo "$line" >>"$out/$1-all.dat"
            if [ -z "$best" ] || awk -v a="$line" -v b="$best" \
                'BEGIN { split(a, x, " "); split(b, y, " "); exit !(x[3] + 0 > y[3] + 0) }'; then
                best=$line
            fi
            r=$((r + 1))
        done
        echo "$best" >>"$out/$1.dat"
    done
}
best_of wrk
best_of sse

# ---- memory soak: BENCH_MEM_REQUESTS requests, half streaming, 8 connections -------------
per=$((memreq / 16)); [ "$per" -lt 1 ] && per=1
mem_soak0=$(mem_row "after the load runs, before the soak")
echo "run.sh: memory soak, 2 x 8 x $per requests" >&2
soak1=$("$sse" -p "$port" -c 8 -n "$per" -m "$memtok" --prompt "$prompt" 2>>"$out/sse.txt" | grep '^RESULT')
mem_soak1=$(mem_row "after $(kv requests "$soak1") streaming soak requests")
soak2=$("$sse" -p "$port" -c 8 -n "$per" -m "$memtok" --prompt "$prompt" --no-stream 2>>"$out/sse.txt" |
        grep '^RESULT')
soak_n=$(( $(kv requests "$soak1") + $(kv requests "$soak2") ))
soak_err=$(( $(kv errors "$soak1") + $(kv errors "$soak2") ))
mem_soak2=$(mem_row "after all $soak_n soak requests ($soak_err errors)")
sleep 2
mem_idle=$(mem_row "2 s later, idle")
threads_end=$(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$pid/status")
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

trap - EXIT INT TERM
kill -TERM "$pid" 2>/dev/null
wait "$pid"
server_rc=$?

# ---- report -----------------------------------------------------------------------------
cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //')
flags=$(grep -m1 '^flags' /proc/cpuinfo | sed 's/.*: //' | tr ' ' '\n' |
        grep -E '^(avx|avx2|fma|f16c|avx512f|avx512bw|avx512_vnni|avx512_bf16)$' | tr '\n' ' ')
rev=$(git -C "$srcdir" rev-parse --short HEAD 2>/dev/null || echo unknown)
ver=$("$server" --version 2>/dev/null | head -n1)
wrkver=$(wrk -v 2>&1 | head -n1 | sed 's/ Copyright.*//')
mhd=$(dpkg-query -W -f='${Version}' libmicrohttpd12 2>/dev/null || echo unknown)
blas=$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || echo unknown)
modelinfo=$(sed -n "s/.*info: model \(.*\)/\1/p" "$log" | head -n1)

gain() { # gain FILE COLUMN [CPUCOLUMN]: value (per CPU) at 32 connections over that at 1
    awk -v col="$2" -v cpu="${3:-0}" '
        { v = $col; if (cpu) v = ($cpu > 0 ? v / $cpu : 0) }
        $1 == 1 { a = v } $1 == 32 { b = v }
        END { if (a > 0 && b != "") printf "%.2f×", b / a; else printf "n/a" }' "$1"
}

cat <<EOF
## Server benchmark results

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); tree: $rev; $ver
- Machine: $cpu, $(nproc) cores, flags: $flags; load average at start $load_start, at end $load_end
- Libraries: libmicrohttpd $mhd, OpenBLAS $blas; load generator: $wrkver (-t $wrkthreads) and bench/server/sse_bench, on the same machine
- Model: \`$(basename "$model")\` ($(mib $((model_bytes / 1024))) MiB, sha256 $(sha256sum "$model" | cut -c1-12)): $modelinfo
- Server flags: \`--host 127.0.0.1 --port 0 $limits $extra\` (others default)
- Requests: \`/v1/completions\`, prompt "$prompt" ($(ujson prompt_tokens) tokens), max_tokens $maxtok, temperature 0.8, a distinct seed per request; ${dur} s per run. One such request: completion_tokens $(ujson completion_tokens), KV bytes $(ujson kv_bytes) (all-global baseline $(ujson kv_bytes_baseline)), window $(ujson window), mean experts per token $(ujson mean_experts_per_token)

### Throughput, not streaming (wrk, bench/server/completions.lua)

| connections | requests/s | generated tokens/s | same, server's count | latency p50 ms | p90 ms | p99 ms | errors (non-2xx / socket / timeout) | mean batch per step | server CPU (cores) | tokens per server CPU-second |
|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|
EOF
awk '{ printf "| %s | %.1f | %.0f | %.0f | %.1f | %.1f | %.1f | %s / %s / %s | %s | %s | %.0f |\n",
       $1, $2, $3, $12, $4, $5, $6, $7, $8, $9, $10, $11, ($11 > 0 ? $3 / $11 : 0) }' \
    "$out/wrk.dat"
cat <<EOF

Errors over all $(wc -l <"$out/wrk-all.dat") wrk runs: $(awk '{ n += $7 + $8 + $9 } END { print n + 0 }' "$out/wrk-all.dat") (non-2xx + socket + timeouts); over all $(wc -l <"$out/sse-all.dat") sse_bench runs: $(awk '{ n += $13 } END { print n + 0 }' "$out/sse-all.dat").
Each table row is the best of $repeat run(s) by generated tokens/s; load average (1 min) at the end of each kept run: wrk $(awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $16 }' "$out/wrk.dat"); sse_bench $(awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $21 }' "$out/sse.dat").

Batching gain (generated tokens/s at 32 concurrent requests over 1): **$(gain "$out/wrk.dat" 3)** (wrk), **$(gain "$out/sse.dat" 3)** (streaming); in tokens per server CPU-second (less sensitive to other processes on the machine): $(gain "$out/wrk.dat" 3 11) (wrk), $(gain "$out/sse.dat" 3 15) (streaming).

### Streaming latency (sse_bench)

| connections | requests/s | generated tokens/s | TTFT p50 ms | p90 | p99 | ITL p50 ms | p90 | p99 | TPOT p50 ms | p90 | p99 | text events per token | errors | server CPU (cores) | tokens per server CPU-second |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
awk '{ printf "| %s | %.1f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %s | %s | %.0f |\n",
       $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $13, $15,
       ($15 > 0 ? $3 / $15 : 0) }' "$out/sse.dat"
cat <<EOF

### Against the limit: the engine alone

The engine's decode tokens/s with B sequences stepped together (bench/bench_engine,
adaptive mode, prompt 32, $maxtok decode steps, best of ${BENCH_ENGINE_REPS:-5}, same model
and thread count, run just before the server started; its full output is in engine.md) next
to the server's generated tokens/s at B connections. The server's figure also includes each
request's prefill and all HTTP/JSON work.

| batch = connections | engine decode tokens/s | server, wrk | ratio | server, streaming | ratio |
|---:|---:|---:|---:|---:|---:|
EOF
if [ -s "$out/engine.dat" ]; then
    awk 'FNR == 1 { f++ } f == 1 { e[$1] = $2; next } f == 2 { w[$1] = $3; next }
         { s = $3; c = $1; if (!(c in e)) next
           printf "| %s | %.0f | %.0f | %.2f | %.0f | %.2f |\n", c, e[c], w[c],
               (e[c] > 0 ? w[c] / e[c] : 0), s, (e[c] > 0 ? s / e[c] : 0) }' \
        "$out/engine.dat" "$out/wrk.dat" "$out/sse.dat"
else
    echo "| (bench/bench_engine not built or BENCH_ENGINE=0: run \`make bench-server\`) | | | | | |"
fi
cat <<EOF

### Resident memory of the server (VmRSS, /proc/$pid/status)

| point | VmRSS MiB | model mapping MiB | other file-backed MiB | anonymous MiB |
|---|---:|---:|---:|---:|
$mem_start
$mem_warm
$mem_soak0
$mem_soak1
$mem_soak2
$mem_idle

Model file: $(mib $((model_bytes / 1024))) MiB, mapped read-only (shared; "model mapping" is the
resident part of that mapping from /proc/PID/smaps; "other file-backed" is the binary and
shared libraries).
Server threads at the end: $threads_end. Server exit status after SIGTERM: $server_rc.

Peak resident memory during each run (VmHWM, reset before the run) and growth per
concurrent request, (peak - RSS before the run) / connections:

| connections | wrk: RSS before MiB | peak MiB | growth per request KiB | sse_bench: RSS before MiB | peak MiB | growth per request KiB |
|---:|---:|---:|---:|---:|---:|---:|
EOF
awk 'NR == FNR { before[$1] = $16; peak[$1] = $17; next }
     { printf "| %s | %.1f | %.1f | %.0f | %.1f | %.1f | %.0f |\n", $1, $13 / 1024,
       $14 / 1024, ($14 - $13) / $1, before[$1] / 1024, peak[$1] / 1024,
       (peak[$1] - before[$1]) / $1 }' "$out/sse.dat" "$out/wrk.dat"

# ---- plots --------------------------------------------------------------------------------
if [ -n "$imgdir" ] && command -v gnuplot >/dev/null 2>&1; then
    mkdir -p "$imgdir"
    if gnuplot -e "wrkdat='$out/wrk.dat'; ssedat='$out/sse.dat'; enginedat='$out/engine.dat'; \
imgdir='$imgdir'" \
        "$srcdir/bench/server/plot.gp" 2>>"$out/gnuplot.log"; then
        printf '\nPlots: %s/server-throughput.png, %s/server-latency.png\n' "$imgdir" "$imgdir"
    else
        echo "run.sh: gnuplot failed (see $out/gnuplot.log)" >&2
    fi
fi
printf '\nRaw results: %s (wrk.txt, sse.txt, *.dat, server.log)\n' "$out"
exit 0
