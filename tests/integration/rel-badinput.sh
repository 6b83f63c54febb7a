#!/bin/bash
# rel-badinput.sh - hostile and broken requests against a live hybridmoe-server: each gets
# its documented status and an OpenAI-style error body, and the server keeps serving
# (a good completion after every bad request, the process alive, /health ok at the end).
# Then every body of the fuzz_request corpus and regressions is sent to both routes.
#
# Short (make check): every case once. HM_LONG_TESTS=1: every case 20 times, interleaved
# with good requests, and RSS compared before and after.
. "$(dirname "$0")/rel-lib.sh"
rel_need
rel_watchdog $([ "$REL_LONG" = 1 ] && echo 900 || echo 150)
rel_start --body-limit 64K --max-n 8 --default-max-tokens 16 || { rel_fail "server start"; rel_done; }

J='Content-Type: application/json'
big=$REL_TMP/big.json        # 100 KB > body_limit
{ printf '{"prompt":"'; head -c 100000 /dev/zero | tr '\0' a; printf '"}'; } > "$big"
deep=$REL_TMP/deep.json      # nesting 5000 deep (jansson's limit is 2048)
{ printf '{"prompt":"x","extra":'; head -c 5000 /dev/zero | tr '\0' '['
  head -c 5000 /dev/zero | tr '\0' ']'; printf '}'; } > "$deep"
deepmsg=$REL_TMP/deepmsg.json # nesting 1000 where messages are expected
{ printf '{"messages":[{"role":"user","content":'; head -c 1000 /dev/zero | tr '\0' '['
  head -c 1000 /dev/zero | tr '\0' ']'; printf '}]}'; } > "$deepmsg"
longp=$REL_TMP/long.json      # ~9000 tokens, past the 256-token context
{ printf '{"prompt":"'; for i in $(seq 3000); do printf 'ab '; done; printf '"}'; } > "$longp"

# name | expected status | expected error code ("-" = null/any) | curl arguments
cases=(
"oversized-body|413|request_too_large|-H|$J|--data-binary|@$big|/v1/completions"
"oversized-chunked|413|request_too_large|-H|$J|-H|Transfer-Encoding: chunked|--data-binary|@$big|/v1/completions"
"deep-nesting|400|invalid_json|-H|$J|--data-binary|@$deep|/v1/completions"
"deep-nesting-messages|400|-|-H|$J|--data-binary|@$deepmsg|/v1/chat/completions"
"invalid-utf8|400|invalid_json|-H|$J|--data-binary|{\"prompt\":\"a"$'\xff\xfe'"b\"}|/v1/completions"
"invalid-utf8-chat|400|invalid_json|-H|$J|--data-binary|{\"messages\":[{\"role\":\"user\",\"content\":\""$'\xc0\xaf'"\"}]}|/v1/chat/completions"
"nul-in-key|400|invalid_json|-H|$J|--data-binary|{\"pro\\u0000mpt\":\"a\"}|/v1/completions"
"nul-in-stop|400|-|-H|$J|--data-binary|{\"prompt\":\"a\",\"stop\":\"\\u0000\"}|/v1/completions"
"nul-in-role|400|-|-H|$J|--data-binary|{\"messages\":[{\"role\":\"user\\u0000\",\"content\":\"x\"}]}|/v1/chat/completions"
"huge-real|400|invalid_json|-H|$J|--data-binary|{\"prompt\":\"x\",\"max_tokens\":1e400}|/v1/completions"
"huge-integer|400|invalid_json|-H|$J|--data-binary|{\"prompt\":\"x\",\"seed\":99999999999999999999999}|/v1/completions"
"nan|400|invalid_json|-H|$J|--data-binary|{\"prompt\":\"x\",\"temperature\":NaN}|/v1/completions"
"infinity|400|invalid_json|-H|$J|--data-binary|{\"prompt\":\"x\",\"temperature\":Infinity}|/v1/completions"
"negative-max-tokens|400|-|-H|$J|--data-binary|{\"prompt\":\"x\",\"max_tokens\":-5}|/v1/completions"
"negative-temperature|400|-|-H|$J|--data-binary|{\"prompt\":\"x\",\"temperature\":-1}|/v1/completions"
"huge-max-tokens|400|-|-H|$J|--data-binary|{\"prompt\":\"x\",\"max_tokens\":4294967296}|/v1/completions"
"huge-max-tokens-chat|400|-|-H|$J|--data-binary|{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1000000}|/v1/chat/completions"
"huge-n|400|-|-H|$J|--data-binary|{\"prompt\":\"x\",\"n\":1000}|/v1/completions"
"zero-n|400|-|-H|$J|--data-binary|{\"prompt\":\"x\",\"n\":0}|/v1/completions"
"real-for-int|400|-|-H|$J|--data-binary|{\"prompt\":\"x\",\"max_tokens\":8.5}|/v1/completions"
"string-for-int|400|-|-H|$J|--data-binary|{\"prompt\":\"x\",\"max_tokens\":\"8\"}|/v1/completions"
"number-prompt|400|-|-H|$J|--data-binary|{\"prompt\":5}|/v1/completions"
"string-messages|400|-|-H|$J|--data-binary|{\"messages\":\"hi\"}|/v1/chat/completions"
"bad-role|400|-|-H|$J|--data-binary|{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}|/v1/chat/completions"
"empty-prompt|400|-|-H|$J|--data-binary|{\"prompt\":\"\"}|/v1/completions"
"empty-messages|400|-|-H|$J|--data-binary|{\"messages\":[]}|/v1/chat/completions"
"missing-prompt|400|-|-H|$J|--data-binary|{}|/v1/completions"
"prompt-past-context|400|context_length_exceeded|-H|$J|--data-binary|@$longp|/v1/completions"
"ids-outside-vocab|400|-|-H|$J|--data-binary|{\"prompt\":[1,2,99999]}|/v1/completions"
"negative-id|400|-|-H|$J|--data-binary|{\"prompt\":[-1]}|/v1/completions"
"array-body|400|-|-H|$J|--data-binary|[1,2]|/v1/completions"
"not-json|400|invalid_json|-H|$J|--data-binary|hello|/v1/completions"
"empty-body|400|-|-H|$J|-X|POST|/v1/completions"
"duplicate-keys|400|invalid_json|-H|$J|--data-binary|{\"prompt\":\"a\",\"prompt\":\"b\"}|/v1/completions"
"wrong-content-type|415|unsupported_media_type|-H|Content-Type: text/plain|--data-binary|{\"prompt\":\"x\"}|/v1/completions"
"unknown-model|404|model_not_found|-H|$J|--data-binary|{\"prompt\":\"x\",\"model\":\"nope\"}|/v1/completions"
"unknown-route|404|not_found|/v1/nothing"
"unknown-route-post|404|not_found|-H|$J|--data-binary|{}|/v2/completions"
"get-on-post-route|405|method_not_allowed|/v1/completions"
"delete|405|method_not_allowed|-X|DELETE|/v1/chat/completions"
"put|405|method_not_allowed|-X|PUT|-H|$J|--data-binary|{}|/v1/completions"
"post-on-health|405|method_not_allowed|-H|$J|--data-binary|{}|/health"
)

good() { # a normal completion still works
    local code
    code=$(rel_post_json "$REL_TMP/good" /v1/completions '{"prompt":"Hello","max_tokens":4}')
    [ "$code" = 200 ] && rel_is_completion "$REL_TMP/good"
}

run_case() {
    local spec=$1 name status code path args=() IFS='|'
    read -r -a f <<<"$spec"
    name=${f[0]} status=${f[1]} code=${f[2]}
    path=${f[${#f[@]} - 1]}
    args=("${f[@]:3:${#f[@]}-4}")
    local got
    got=$(rel_req "$REL_TMP/out" "${args[@]}" "$URL$path")
    if [ "$got" != "$status" ]; then
        rel_fail "$name: status $got, want $status: $(head -c 300 "$REL_TMP/out")"
        return
    fi
    if [ "$code" = - ]; then
        rel_is_error_body "$REL_TMP/out" || { rel_fail "$name: not an error body: $(head -c 300 "$REL_TMP/out")"; return; }
    else
        rel_is_error_body "$REL_TMP/out" "$code" || { rel_fail "$name: want code $code: $(head -c 300 "$REL_TMP/out")"; return; }
    fi
    good || { rel_fail "$name: a good request failed afterwards"; return; }
    echo "ok: $name -> $got $(grep -o '"code":[^}]*' "$REL_TMP/out")"
}

# the fuzz_request corpus and regressions, as bodies of both routes: any status the API
# documents, a JSON body or a complete SSE stream, and the server unharmed
replay_corpus() {
    local f route code n=0
    for f in "$HM_SRCDIR"/tests/fuzz/corpus/fuzz_request/* "$HM_SRCDIR"/tests/fuzz/regressions/fuzz_request/*; do
        [ -f "$f" ] || continue
        for route in /v1/completions /v1/chat/completions; do
            n=$((n + 1))
            code=$(rel_req "$REL_TMP/c" -N -H "$J" --data-binary "@$f" "$URL$route")
            case $code in
            200) rel_is_completion "$REL_TMP/c" || rel_is_stream "$REL_TMP/c" ||
                     rel_fail "corpus $(basename "$f") on $route: malformed 200: $(head -c 200 "$REL_TMP/c")" ;;
            400|404|413|415) rel_is_error_body "$REL_TMP/c" ||
                     rel_fail "corpus $(basename "$f") on $route: $code without an error body" ;;
            *) rel_fail "corpus $(basename "$f") on $route: status $code: $(head -c 200 "$REL_TMP/c")" ;;
            esac
        done
    done
    good || rel_fail "a good request failed after the corpus replay"
    echo "ok: $n fuzz_request corpus bodies replayed against both routes"
}

rounds=1
[ "$REL_LONG" = 1 ] && rounds=20
rss0=$(rel_rss_kb "$SRV_PID")
for r in $(seq "$rounds"); do
    for c in "${cases[@]}"; do
        run_case "$c"
    done
done
replay_corpus
# U+0000 inside text is valid JSON and is accepted (tokenized with the rest of the prompt)
code=$(rel_post_json "$REL_TMP/nul" /v1/completions '{"prompt":"a\u0000b","max_tokens":2}')
if [ "$code" = 200 ] && rel_is_completion "$REL_TMP/nul"; then
    echo "ok: nul-in-prompt -> 200"
else
    rel_fail "nul-in-prompt: status $code: $(head -c 300 "$REL_TMP/nul")"
fi
rss1=$(rel_rss_kb "$SRV_PID")
rel_log "$(( ${#cases[@]} * rounds )) bad requests; RSS ${rss0} KiB -> ${rss1} KiB"
rel_check "server still alive" kill -0 "$SRV_PID"
rel_check "/health ok" test "$(rel_req "$REL_TMP/h" "$URL/health")" = 200
if [ "$REL_LONG" = 1 ]; then
    rel_check_rss "RSS growth under 64 MiB" "$rss0" "$rss1" 65536
fi
rel_stop_server TERM
rel_check "SIGTERM: exit 0" test "$SRV_RC" = 0
rel_done
