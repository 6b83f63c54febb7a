#!/bin/sh
# A real client: the official `openai` npm package (v4) runs completions, chat and
# streaming against hybridmoe-server on 127.0.0.1 with the tiny model, and checks the
# results. Skips (exit 77) when node/npm are missing or the package cannot be installed.
set -u
B="${HM_BUILDDIR:-.}"
T="$(mktemp -d /tmp/hm-openai-node.XXXXXX)"
PID=
cleanup() {
    if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "SKIP: node and npm are needed (apt-get install nodejs npm)"; exit 77; }
if ! (cd "$T" && timeout 300 npm install --no-audit --no-fund --silent openai@4 \
        >"$T/npm.log" 2>&1); then
    echo "SKIP: cannot install the openai npm package:"; tail -5 "$T/npm.log"; exit 77
fi

"$B/hybridmoe-server" --model "$B/models/tiny.gguf" --host 127.0.0.1 --port 0 \
    --api_key sekrit --threads 1 >"$T/server.log" 2>&1 &
PID=$!
PORT=
i=0
while [ $i -lt 300 ] && [ -z "$PORT" ]; do
    PORT=$(sed -n 's|.*ready: listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$T/server.log")
    [ -n "$PORT" ] || sleep 0.05
    i=$((i + 1))
done
[ -n "$PORT" ] || { echo "FAIL: server did not start"; cat "$T/server.log"; exit 1; }

cat >"$T/test.mjs" <<'JS'
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const client = new OpenAI({ baseURL: `http://127.0.0.1:${process.env.PORT}/v1`,
                            apiKey: 'sekrit', maxRetries: 0, timeout: 30000 });

const models = await client.models.list();
assert.equal(models.data[0].id, 'tiny');

const c = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 8,
                                            temperature: 0, logprobs: 2 });
assert.equal(c.object, 'text_completion');
assert.equal(c.choices.length, 1);
assert.ok(['stop', 'length'].includes(c.choices[0].finish_reason));
assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
assert.ok(c.usage.hybridmoe.kv_bytes > 0);
assert.equal(c.choices[0].logprobs.tokens.length, c.usage.completion_tokens);

const chat = await client.chat.completions.create({
  model: 'tiny', max_tokens: 8, temperature: 0, n: 2,
  messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hi!' }] });
assert.equal(chat.object, 'chat.completion');
assert.equal(chat.choices.length, 2);
assert.equal(chat.choices[0].message.role, 'assistant');
assert.equal(chat.choices[0].message.content, chat.choices[1].message.content);

// streaming chat gives the same text as the non-streaming call, then usage
const stream = await client.chat.completions.create({
  model: 'tiny', max_tokens: 8, temperature: 0, stream: true,
  stream_options: { include_usage: true },
  messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hi!' }] });
let text = '', finish = null, usage = null, roles = 0;
for await (const chunk of stream) {
  assert.equal(chunk.object, 'chat.completion.chunk');
  if (chunk.usage) usage = chunk.usage;
  for (const ch of chunk.choices) {
    if (ch.delta.role) roles++;
    if (ch.delta.content) text += ch.delta.content;
    if (ch.finish_reason) finish = ch.finish_reason;
  }
}
assert.equal(roles, 1);
assert.equal(text, chat.choices[0].message.content);
assert.ok(['stop', 'length'].includes(finish));
assert.ok(usage && usage.completion_tokens >= 1);

// streaming completions
const cs = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 8,
                                             temperature: 0, stream: true });
let ctext = '';
for await (const chunk of cs) for (const ch of chunk.choices) ctext += ch.text;
assert.equal(ctext, c.choices[0].text);

// errors surface as APIError with the status and param
await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', temperature: 3 }),
  (e) => e.status === 400 && e.param === 'temperature');
await assert.rejects(new OpenAI({ baseURL: client.baseURL, apiKey: 'wrong', maxRetries: 0 })
  .models.list(), (e) => e.status === 401);
console.log('openai-node: all checks passed');
JS
cd "$T" && PORT="$PORT" timeout 120 node test.mjs
rc=$?
[ $rc -eq 0 ] || { echo "FAIL (node exit $rc); server log:"; tail -20 "$T/server.log"; }
exit $rc
