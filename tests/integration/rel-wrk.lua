-- rel-wrk.lua - wrk script of tests/integration/rel-wrk.sh: POSTs completions (every
-- fourth a chat completion), and counts responses that are not a well-formed 200.
local bodies = {
  '{"prompt":"Hello, my name is","max_tokens":8}',
  '{"prompt":"The capital of France","max_tokens":8,"temperature":0.7,"seed":1}',
  '{"prompt":[1,2,3,4,5],"max_tokens":4}',
  '{"messages":[{"role":"user","content":"Hi there"}],"max_tokens":8}',
}
local paths = { "/v1/completions", "/v1/completions", "/v1/completions",
                "/v1/chat/completions" }
local threads = {}
local n = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  good = 0
  first_bad = ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local i = (n % 4) + 1
  return wrk.format("POST", paths[i], nil, bodies[i])
end

local function well_formed(body)
  return body:match('^{"id":"[a-z]*cmpl%-') ~= nil
     and body:find('"choices":[{', 1, true) ~= nil
     and body:match('"finish_reason":"[a-z]+"') ~= nil
     and body:find('"usage":{"prompt_tokens":', 1, true) ~= nil
     and body:sub(-1) == "}"
end

function response(status, headers, body)
  if status == 200 and well_formed(body) then
    good = good + 1
  else
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. body:sub(1, 200) end
  end
end

function done(summary, latency, requests)
  local g, b = 0, 0
  local fb = ""
  for _, t in ipairs(threads) do
    g = g + t:get("good")
    b = b + t:get("bad")
    if fb == "" then fb = t:get("first_bad") end
  end
  io.write(string.format("REL good=%d bad=%d requests=%d connect_errors=%d read_errors=%d " ..
    "write_errors=%d status_errors=%d timeouts=%d p50_ms=%.1f p99_ms=%.1f\n",
    g, b, summary.requests, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
  if fb ~= "" then io.write("REL first_bad=" .. fb .. "\n") end
end
