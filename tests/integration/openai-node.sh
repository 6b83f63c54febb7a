#!/bin/sh
# A real client: the official `openai` npm package (v4) runs completions, chat and
# streaming against hybridmoe-server on 127.0.0.1 with the tiny model, and checks the
# results: n > 1 (also streamed, per choice index), several prompts, logprobs shapes,
# stop sequences, echo (prompt scoring), stream_options.include_usage, many requests on kept-alive
# connections, and errors as the SDK's typed exceptions (401, 404 model, 400 param and
# context, an error inside a stream). Skips (exit 77) when node/npm are missing or the
# package cannot be installed.
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
    --api_key sekrit --threads 1 --debug_step_delay_ms 1 >"$T/server.log" 2>&1 &
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

// echo: scoring a text as lm-evaluation-harness does (prompt logprobs, nothing generated),
// and the prompt in front of a completion
const sc = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 0,
                                             echo: true, logprobs: 1 });
assert.equal(sc.choices[0].text, 'Hello');
assert.equal(sc.usage.completion_tokens, 0);
assert.equal(sc.choices[0].logprobs.tokens.length, sc.usage.prompt_tokens);
assert.equal(sc.choices[0].logprobs.token_logprobs[0], null);
assert.ok(sc.choices[0].logprobs.token_logprobs.slice(1).every((x) => x < 0));
const ec = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 8,
                                             temperature: 0, echo: true });
assert.equal(ec.choices[0].text, 'Hello' + c.choices[0].text);

// errors surface as APIError with the status and param
await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', temperature: 3 }),
  (e) => e.status === 400 && e.param === 'temperature');
await assert.rejects(new OpenAI({ baseURL: client.baseURL, apiKey: 'wrong', maxRetries: 0 })
  .models.list(), (e) => e.status === 401);
await assert.rejects(client.completions.create({ model: 'gpt-4', prompt: 'x' }),
  (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
await assert.rejects(client.models.retrieve('gpt-4'), (e) => e instanceof OpenAI.NotFoundError);
assert.equal((await client.models.retrieve('tiny')).object, 'model');
await assert.rejects(client.completions.create({ model: 'tiny', prompt: [1, 2, 3], max_tokens: 255 }),
  (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded' &&
         e.param === 'max_tokens');
await assert.rejects(new OpenAI({ baseURL: client.baseURL, apiKey: 'wrong', maxRetries: 0 })
  .chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }] }),
  (e) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key');

// n > 1 streamed: every chunk names its choice; per choice the text of the plain call
const msgs = [{ role: 'developer', content: [{ type: 'text', text: 'Be brief.' }] },
              { role: 'user', content: 'Hi', name: 'bob' }];
const plain = await client.chat.completions.create({ model: 'tiny', messages: msgs, n: 3,
  max_tokens: 6, temperature: 0.9, seed: 42 });
assert.deepEqual(plain.choices.map((c) => c.index), [0, 1, 2]);
const s3 = await client.chat.completions.create({ model: 'tiny', messages: msgs, n: 3,
  max_tokens: 6, temperature: 0.9, seed: 42, stream: true, stream_options: { include_usage: true } });
const texts = ['', '', ''], fins = [null, null, null];
let u3 = null, after = false;
for await (const chunk of s3) {
  assert.ok(!after, 'nothing after the usage chunk');
  if (chunk.usage) { u3 = chunk.usage; assert.equal(chunk.choices.length, 0); after = true; continue; }
  assert.equal(chunk.usage, null);
  assert.equal(chunk.choices.length, 1);
  const ch = chunk.choices[0];
  assert.equal(fins[ch.index], null, 'no chunk after a choice finished');
  if (ch.delta.content) texts[ch.index] += ch.delta.content;
  if (ch.finish_reason) { fins[ch.index] = ch.finish_reason; assert.deepEqual(ch.delta, {}); }
}
for (let i = 0; i < 3; i++) {
  assert.equal(texts[i], plain.choices[i].message.content);
  assert.equal(fins[i], plain.choices[i].finish_reason);
}
assert.equal(u3.completion_tokens, plain.usage.completion_tokens);
assert.equal(u3.prompt_tokens, plain.usage.prompt_tokens);

// several prompts: index = prompt * n + j
const multi = await client.completions.create({ model: 'tiny', prompt: ['ab', 'The cat'], n: 2,
  max_tokens: 4, temperature: 0 });
assert.deepEqual(multi.choices.map((c) => c.index), [0, 1, 2, 3]);
const solo = await client.completions.create({ model: 'tiny', prompt: 'The cat', max_tokens: 4,
  temperature: 0 });
assert.equal(multi.choices[2].text, solo.choices[0].text);
assert.equal(multi.choices[3].text, solo.choices[0].text);

// logprobs: completions {tokens, token_logprobs, top_logprobs: [{token: lp}], text_offset}
const lc = await client.completions.create({ model: 'tiny', prompt: 'Hi', max_tokens: 5,
  temperature: 0, logprobs: 3, logit_bias: { 97: 100, 98: 100 } });
const L = lc.choices[0].logprobs;
assert.equal(L.tokens.join(''), lc.choices[0].text);
assert.equal(L.token_logprobs.length, 5);
assert.deepEqual(L.text_offset, [0, 1, 2, 3, 4]);
for (let i = 0; i < 5; i++) {
  assert.ok(L.token_logprobs[i] <= 0);
  assert.ok(Object.keys(L.top_logprobs[i]).length <= 4);
  assert.equal(L.top_logprobs[i][L.tokens[i]], L.token_logprobs[i]);
}
// chat: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}
const lchat = await client.chat.completions.create({ model: 'tiny', max_tokens: 3, temperature: 0,
  logprobs: true, top_logprobs: 2, messages: [{ role: 'user', content: 'x' }] });
const LC = lchat.choices[0].logprobs.content;
assert.equal(LC.length, lchat.usage.completion_tokens);
for (const e of LC) {
  assert.equal(typeof e.token, 'string');
  assert.ok(Array.isArray(e.bytes));
  assert.equal(e.top_logprobs.length, 2);
  for (const t of e.top_logprobs) assert.ok(typeof t.token === 'string' && t.logprob <= 0 &&
                                            Array.isArray(t.bytes));
}

// stop: across tokens, never in the text, finish_reason stop (plain and streamed)
const ab = await client.completions.create({ model: 'tiny', prompt: 'Hi', max_tokens: 12,
  temperature: 0, logit_bias: { 97: 100, 98: 100, 99: 100 } });
const full = ab.choices[0].text, stopStr = full.slice(3, 5);
const want = full.slice(0, full.indexOf(stopStr));
const st = await client.completions.create({ model: 'tiny', prompt: 'Hi', max_tokens: 12,
  temperature: 0, logit_bias: { 97: 100, 98: 100, 99: 100 }, stop: ['zz', stopStr] });
assert.equal(st.choices[0].text, want);
assert.equal(st.choices[0].finish_reason, 'stop');
const sst = await client.completions.create({ model: 'tiny', prompt: 'Hi', max_tokens: 12,
  temperature: 0, logit_bias: { 97: 100, 98: 100, 99: 100 }, stop: stopStr, stream: true,
  stream_options: { include_usage: true } });
let stext = '', sfin = null, susage = null;
for await (const chunk of sst) {
  if (chunk.usage) { susage = chunk.usage; assert.equal(chunk.choices.length, 0); }
  for (const ch of chunk.choices) { stext += ch.text; if (ch.finish_reason) sfin = ch.finish_reason; }
}
assert.equal(stext, want);
assert.equal(sfin, 'stop');
assert.equal(susage.completion_tokens, st.usage.completion_tokens);

// an error after the stream began (the request's deadline) surfaces from the iterator
await assert.rejects((async () => {
  const s = await client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 250,
    stream: true, timeout_s: 0.05, ignore_eos: true });
  for await (const _ of s) { /* drain */ }
})(), (e) => e instanceof OpenAI.APIError);

// many sequential requests (kept-alive connections), then the server still answers
for (let i = 0; i < 40; i++) {
  const r = await client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 1 });
  assert.equal(r.choices.length, 1);
}
console.log('openai-node: all checks passed');
JS
cd "$T" && PORT="$PORT" timeout 120 node test.mjs
rc=$?
[ $rc -eq 0 ] || { echo "FAIL (node exit $rc); server log:"; tail -20 "$T/server.log"; }
exit $rc
