-- completions.lua - wrk script: POST /v1/completions (not streaming) with a fixed prompt,
-- temperature 0.8 and a distinct seed per request; counts generated tokens from
-- usage.completion_tokens and non-2xx answers, and prints one machine-readable line.
--
--   wrk -t1 -c32 -d20s --latency --timeout 60s -s bench/server/completions.lua \
--       http://127.0.0.1:8080 -- max_tokens=32 temperature=0.8 model=NAME
--
-- Arguments after `--` (all optional): max_tokens (default 32), temperature (0.8),
-- model (default: none sent, the server's only model), prompt (default below),
-- path (default /v1/completions).
--
-- Output (last line, parsed by bench/server/run.sh):
--   RESULT threads=T duration_s=D requests=N rps=R tokens=K tok_s=S lat_p50_ms=
--          lat_p90_ms= lat_p99_ms= lat_mean_ms= lat_max_ms= non2xx=E socket_errors=X
--          timeouts=Y parsed=P   (P = 2xx answers whose usage was found)
-- wrk measures latency per request on each connection (one request in flight per
-- connection: no pipelining), so C connections = C concurrent requests.

local threads = {}
local next_id = 0

function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

local function json_string(s)
    s = s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('\n', '\\n')
    return '"' .. s .. '"'
end

function init(args)
    local opt = {
        max_tokens = "32",
        temperature = "0.8",
        prompt = "ROMEO: But soft, what light through yonder window breaks? It is the east, and",
        path = "/v1/completions",
    }
    for _, a in ipairs(args) do
        local k, v = a:match("^([%w_]+)=(.*)$")
        if k then opt[k] = v end
    end
    path = opt.path
    body_head = '{' .. (opt.model and ('"model":' .. json_string(opt.model) .. ',') or '')
        .. '"prompt":' .. json_string(opt.prompt)
        .. ',"max_tokens":' .. tonumber(opt.max_tokens)
        .. ',"temperature":' .. tonumber(opt.temperature)
        .. ',"seed":'
    headers = { ["Content-Type"] = "application/json" }
    -- distinct seeds across threads: thread i uses i*10^7 + 1, + 2, ...
    seed = id * 10000000
    tokens = 0
    non2xx = 0
    parsed = 0
end

function request()
    seed = seed + 1
    return wrk.format("POST", path, headers, body_head .. seed .. '}')
end

function response(status, hdrs, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
        return
    end
    local n = body:match('"completion_tokens"%s*:%s*(%d+)')
    if n then
        tokens = tokens + tonumber(n)
        parsed = parsed + 1
    end
end

function done(summary, latency, requests)
    local tok, bad, ok = 0, 0, 0
    for _, t in ipairs(threads) do
        tok = tok + t:get("tokens")
        bad = bad + t:get("non2xx")
        ok = ok + t:get("parsed")
    end
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        "RESULT threads=%d duration_s=%.3f requests=%d rps=%.2f tokens=%d tok_s=%.1f "
        .. "lat_p50_ms=%.2f lat_p90_ms=%.2f lat_p99_ms=%.2f lat_mean_ms=%.2f lat_max_ms=%.2f "
        .. "non2xx=%d socket_errors=%d timeouts=%d parsed=%d\n",
        #threads, secs, summary.requests, summary.requests / secs, tok, tok / secs,
        latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
        latency:percentile(99) / 1e3, latency.mean / 1e3, latency.max / 1e3,
        bad, e.connect + e.read + e.write, e.timeout, ok))
end
