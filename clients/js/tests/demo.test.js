// The client against the real demo server (samples/Idem.Demo on SQLite), through a proxy that loses answers:
// N logical operations give N orders (and N communities), counted by the server's /stats.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { IdemClient, HttpError, IdempotencyKeyReusedError } from '../idem.js';
import { startDemo } from './demo-server.js';

const N = 5;

// Forwards to the demo and, on the first attempt of every key, drops the client's connection after the demo
// answered: the order exists, the client never hears of it.
async function startDroppingProxy(target) {
  const seen = new Map();
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const key = req.headers['idempotency-key'];
    const attempt = (seen.get(key) ?? 0) + 1;
    if (key) seen.set(key, attempt);
    const upstream = await fetch(target + req.url, {
      method: req.method,
      headers: Object.fromEntries(Object.entries(req.headers).filter(([name]) => !['host', 'connection', 'content-length'].includes(name))),
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    const body = Buffer.from(await upstream.arrayBuffer());
    if (key && attempt === 1) { req.socket.destroy(); return; }
    const headers = {};
    upstream.headers.forEach((value, name) => { if (!['content-length', 'transfer-encoding', 'connection'].includes(name)) headers[name] = value; });
    res.writeHead(upstream.status, headers);
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, attemptsOf: (k) => seen.get(k) ?? 0, close: () => { server.closeAllConnections(); return new Promise((r) => server.close(r)); } };
}

describe('against the demo server', () => {
  let demo;
  let proxy;
  before(async () => {
    demo = await startDemo();
    proxy = await startDroppingProxy(demo.url);
  });
  after(async () => {
    await proxy?.close();
    await demo?.stop();
  });

  test('answers lost after the order was made: N operations, N orders, each answer a replay', async () => {
    const client = new IdemClient({ baseUrl: proxy.url, backoffMs: 20 });
    const before = await demo.stats();
    const results = await Promise.all(Array.from({ length: N }, (_, i) => client.post('/orders', { item: `book-${i}`, amount: 10 + i })));
    const after = await demo.stats();
    assert.equal(after.orders - before.orders, N);
    assert.equal(after.executions - before.executions, N);
    for (const [i, result] of results.entries()) {
      assert.equal(result.status, 201);
      assert.equal(result.replayed, true);
      assert.equal(result.attempts, 2);
      assert.equal(result.data.item, `book-${i}`);
      assert.ok(result.requestId, 'X-Request-Id exposed');
    }
  });

  test('communities through lost answers: N operations, N communities with their memberships', async () => {
    const client = new IdemClient({ baseUrl: proxy.url, backoffMs: 20 });
    const before = await demo.stats();
    const names = Array.from({ length: N }, (_, i) => `Lost answers ${i} ${crypto.randomUUID().slice(0, 8)}`);
    const results = await Promise.all(names.map((name) => client.post('/communities', { name })));
    const after = await demo.stats();
    assert.equal(after.communities - before.communities, N);
    assert.equal(after.memberships - before.memberships, N);
    for (const [i, result] of results.entries()) {
      assert.equal(result.status, 201);
      assert.equal(result.replayed, true);
      assert.equal(result.data.name, names[i]);
      assert.ok(result.data.slug);
    }
  });

  test('a client timeout on a slow order is retried with the same key: one order', async () => {
    const client = new IdemClient({ baseUrl: demo.url, timeoutMs: 400, backoffMs: 50, maxAttempts: 10 });
    const before = await demo.stats();
    const result = await client.post('/orders', { item: 'slow', amount: 1, delayMs: 1500 });
    const after = await demo.stats();
    assert.ok(result.attempts >= 2);
    assert.equal(result.replayed, true);
    assert.equal(after.orders - before.orders, 1);
  });

  test('a validation problem (400) is not retried and is parsed', async () => {
    const requests = [];
    const client = new IdemClient({ baseUrl: demo.url, fetch: (u, i) => { requests.push(u); return fetch(u, i); } });
    const error = await client.post('/orders', { item: 'free', amount: 0 }).then(() => assert.fail('resolved'), (e) => e);
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 400);
    assert.ok(error.title);
    assert.ok(error.requestId, 'request id from the problem or X-Request-Id');
    assert.equal(requests.length, 1);
  });

  test('the same key with another body is a 422 IdempotencyKeyReusedError, not retried', async () => {
    const requests = [];
    const client = new IdemClient({ baseUrl: demo.url, fetch: (u, i) => { requests.push(u); return fetch(u, i); } });
    const key = crypto.randomUUID();
    await client.operation('POST', '/orders', { item: 'pen', amount: 2 }, { idempotencyKey: key }).send();
    const error = await client.operation('POST', '/orders', { item: 'ink', amount: 3 }, { idempotencyKey: key }).send().then(() => assert.fail('resolved'), (e) => e);
    assert.ok(error instanceof IdempotencyKeyReusedError);
    assert.equal(error.status, 422);
    assert.ok(error.detail);
    assert.equal(requests.length, 2);
  });

  test('the demo page and the client module are served', async () => {
    const page = await fetch(`${demo.url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /form id="create-community"/);
    const module = await fetch(`${demo.url}/js/idem.js`);
    assert.equal(module.status, 200);
    assert.match(module.headers.get('content-type'), /javascript/);
  });
});
