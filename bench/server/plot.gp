# plot.gp - PNG plots of bench/server/run.sh's results (gnuplot 5).
#   gnuplot -e "wrkdat='wrk.dat'; ssedat='sse.dat'; enginedat='engine.dat'; imgdir='docs/img'" \
#       bench/server/plot.gp
# engine.dat (may be empty): 1 batch, 2 the engine's decode tokens/s.
# wrk.dat columns: 1 connections, 2 requests/s, 3 generated tokens/s, 4-6 latency
#   p50/p90/p99 ms, ... (see run.sh); sse.dat: 1 connections, 2 requests/s, 3 tokens/s,
#   4-6 TTFT p50/p90/p99 ms, 7-9 ITL, 10-12 TPOT p50/p90/p99 ms, ...
set terminal pngcairo size 720,480 font "DejaVu Sans,9"
set logscale x 2
set xtics (1, 2, 4, 8, 16, 32, 64, 128)
set xrange [0.8:80]
set xlabel "concurrent requests (connections)"
set grid
set key below maxrows 3 font ",8"

set output imgdir."/server-throughput.png"
set title "hybridmoe-server: throughput against concurrency"
set ylabel "generated tokens/s"
set y2label "requests/s"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
has_engine = system("test -s '".enginedat."' && echo 1 || echo 0") + 0
plot wrkdat using 1:3 with linespoints lw 2 pt 7 title "tokens/s (wrk, not streaming)", \
     ssedat using 1:3 with linespoints lw 2 pt 5 title "tokens/s (sse\\_bench, streaming)", \
     wrkdat using 1:2 axes x1y2 with linespoints dt 2 pt 6 title "requests/s (wrk)", \
     ssedat using 1:2 axes x1y2 with linespoints dt 2 pt 4 title "requests/s (sse\\_bench)", \
     (has_engine ? enginedat : wrkdat) using 1:(has_engine ? $2 : NaN) with linespoints \
         lw 1 dt 3 pt 2 lc rgb "black" title (has_engine ? "engine alone: decode tokens/s" : "")

set output imgdir."/server-latency.png"
set title "hybridmoe-server: latency against concurrency"
unset y2tics
unset y2label
set ytics mirror
set ylabel "milliseconds (log scale)"
set logscale y
set yrange [*:*]
plot wrkdat using 1:4 with linespoints lw 2 pt 7 title "request p50 (wrk)", \
     wrkdat using 1:6 with linespoints dt 2 pt 6 title "request p99 (wrk)", \
     ssedat using 1:4 with linespoints lw 2 pt 5 title "time to first token p50", \
     ssedat using 1:6 with linespoints dt 2 pt 4 title "time to first token p99", \
     ssedat using 1:10 with linespoints lw 2 pt 9 title "time per output token p50", \
     ssedat using 1:12 with linespoints dt 2 pt 8 title "time per output token p99"
