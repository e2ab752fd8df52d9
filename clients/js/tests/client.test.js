// The client against a deliberately faulty server: N logical operations give N executions on the server, whatever
// the network does to the attempts; a naive retry loop (a new key per attempt) against the same faults duplicates.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  IdemClient, HttpError, IdempotencyKeyReusedError, TimeoutError, NetworkError, parseRetryAfter, retryDelay,
} from '../idem.js';
import { startFaultyServer } from './faulty-server.js';

const N = 5;

// What front-end code often does: retry on failure, but with a fresh key (or none) on every attempt.
async function naivePost(url, body, { timeoutMs, maxAttempts }) {
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    try {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': crypto.randomUUID() },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.text();
      if (response.ok) return response;
    } catch { /* retry */ }
  }
  return undefined;
}

describe('against a faulty server', () => {
  let server;
  before(async () => { server = await startFaultyServer({ stallMs: 800, retryAfter: '1' }); });
  after(() => server.close());

  test('connections dropped after the handler ran: N operations, N executions, every answer a replay', async () => {
    const client = new IdemClient({ baseUrl: server.url, backoffMs: 20, timeoutMs: 5000 });
    const before = server.stats.executions;
    const results = await Promise.all(Array.from({ length: N }, (_, i) => client.post('/drop', { n: i })));
    assert.equal(server.stats.executions - before, N);
    for (const [i, result] of results.entries()) {
      assert.equal(result.status, 201);
      assert.equal(result.attempts, 2);
      assert.equal(result.replayed, true);
      assert.equal(result.data.echo.n, i);
      assert.match(result.requestId, /^req-/);
      assert.equal(server.attemptsOf(result.idempotencyKey), 2);
    }
    assert.equal(new Set(results.map((r) => r.idempotencyKey)).size, N, 'one key per operation');
  });

  test('naive retries with a new key per attempt duplicate under the same dropped connections', async () => {
    const before = server.stats.executions;
    const answers = await Promise.all(Array.from({ length: N }, (_, i) => naivePost(`${server.url}/drop`, { n: i }, { timeoutMs: 5000, maxAttempts: 3 })));
    assert.equal(server.stats.executions - before, 3 * N, 'every attempt executed again');
    assert.ok(answers.every((a) => a === undefined));
  });

  test('attempts that stall past the client timeout are retried with the same key: N executions', async () => {
    const client = new IdemClient({ baseUrl: server.url, backoffMs: 20, timeoutMs: 250, maxAttempts: 8 });
    const before = server.stats.executions;
    const results = await Promise.all(Array.from({ length: N }, (_, i) => client.post('/stall', { n: i })));
    assert.equal(server.stats.executions - before, N);
    assert.ok(results.every((r) => r.attempts >= 2 && r.replayed));
  });

  test('naive retries after a client timeout execute every attempt', async () => {
    const before = server.stats.executions;
    await Promise.all(Array.from({ length: N }, (_, i) => naivePost(`${server.url}/stall`, { n: i }, { timeoutMs: 250, maxAttempts: 2 })));
    assert.equal(server.stats.executions - before, 2 * N);
  });

  for (const [path, status] of [['/busy', 503], ['/conflict', 409]]) {
    test(`${status} with Retry-After is retried with the same key after the server's delay`, async () => {
      const client = new IdemClient({ baseUrl: server.url, backoffMs: 10 });
      const retries = [];
      const before = server.stats.executions;
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: N }, (_, i) =>
        client.post(path, { n: i }, { onRetry: (info) => retries.push(info) })));
      assert.ok(Date.now() - started >= 950, 'waited for Retry-After: 1');
      assert.equal(server.stats.executions - before, N);
      assert.ok(results.every((r) => r.attempts === 2 && !r.replayed));
      assert.equal(retries.length, N);
      assert.ok(retries.every((r) => r.error instanceof HttpError && r.error.status === status));
    });
  }

  test('a status still retryable after the last attempt surfaces as a typed HttpError', async () => {
    const client = new IdemClient({ baseUrl: server.url, maxAttempts: 1 });
    const error = await client.post('/busy', { n: 1 }).then(() => assert.fail('resolved'), (e) => e);
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 503);
    assert.equal(error.attempts, 1);
    assert.equal(error.title, 'Store unavailable');
  });

  test('400 is never retried and its problem+json is parsed', async () => {
    const client = new IdemClient({ baseUrl: server.url, backoffMs: 1 });
    const before = server.stats.byPath['/bad'] ?? 0;
    const error = await client.post('/bad', { name: '' }).then(() => assert.fail('resolved'), (e) => e);
    assert.ok(error instanceof HttpError && !(error instanceof IdempotencyKeyReusedError));
    assert.equal(error.status, 400);
    assert.equal(error.title, 'Bad request');
    assert.equal(error.detail, 'name is required');
    assert.equal(error.requestId, 'problem-400');
    assert.equal(error.attempts, 1);
    assert.equal(server.stats.byPath['/bad'] - before, 1);
  });

  test('422 is never retried and is an IdempotencyKeyReusedError', async () => {
    const client = new IdemClient({ baseUrl: server.url, backoffMs: 1 });
    const before = server.stats.byPath['/mismatch'] ?? 0;
    const error = await client.post('/mismatch', { a: 1 }).then(() => assert.fail('resolved'), (e) => e);
    assert.ok(error instanceof IdempotencyKeyReusedError);
    assert.equal(error.status, 422);
    assert.equal(error.detail, 'The key was used with another request.');
    assert.equal(server.stats.byPath['/mismatch'] - before, 1);
  });

  test('a second send of an operation in flight joins it; a send after success returns the same result', async () => {
    const client = new IdemClient({ baseUrl: server.url, timeoutMs: 5000 });
    const before = server.stats.requests;
    const op = client.operation('POST', '/stall', { n: 'join' });
    const [a, b] = await Promise.all([op.send(), op.send()]);
    assert.equal(a, b);
    assert.equal(await op.send(), a);
    assert.equal(server.stats.requests - before, 1);
  });

  test('two operations with the same body are two intents: two keys, two executions', async () => {
    const client = new IdemClient({ baseUrl: server.url });
    const before = server.stats.executions;
    const a = await client.post('/conflict', { same: true });
    const b = await client.post('/conflict', { same: true });
    assert.notEqual(a.idempotencyKey, b.idempotencyKey);
    assert.equal(server.stats.executions - before, 2);
  });

  test('the caller\'s abort stops at once and is not retried', async () => {
    const client = new IdemClient({ baseUrl: server.url, timeoutMs: 5000 });
    const controller = new AbortController();
    const op = client.operation('POST', '/stall', { n: 'abort' });
    setTimeout(() => controller.abort(new Error('user left')), 100);
    await assert.rejects(op.send({ signal: controller.signal }), /user left/);
    assert.equal(server.attemptsOf(op.key), 1);
  });

  test('without a key a POST is never retried', async () => {
    const client = new IdemClient({ baseUrl: server.url, timeoutMs: 200 });
    const before = server.stats.byPath['/stall'];
    const error = await client.post('/stall', { n: 'nokey' }, { idempotencyKey: null }).then(() => assert.fail('resolved'), (e) => e);
    assert.ok(error instanceof TimeoutError);
    assert.equal(error.attempts, 1);
    assert.equal(server.stats.byPath['/stall'] - before, 1);
  });
});

test('Retry-After larger than the cap is capped', async () => {
  const server = await startFaultyServer({ retryAfter: '3600' });
  try {
    const client = new IdemClient({ baseUrl: server.url, maxRetryAfterMs: 50 });
    const result = await client.post('/busy', { n: 1 });
    assert.equal(result.attempts, 2);
    assert.equal(server.stats.executions, 1);
  } finally {
    await server.close();
  }
});

test('a refused connection is a NetworkError after maxAttempts, with the same key throughout', async () => {
  const server = await startFaultyServer();
  const url = server.url;
  await server.close(); // nothing listens there now
  const keys = [];
  const client = new IdemClient({ baseUrl: url, maxAttempts: 3, backoffMs: 5, onRetry: (info) => keys.push(info.idempotencyKey) });
  const error = await client.post('/drop', {}).then(() => assert.fail('resolved'), (e) => e);
  assert.ok(error instanceof NetworkError);
  assert.equal(error.attempts, 3);
  assert.equal(new Set([...keys, error.idempotencyKey]).size, 1);
});

test('Retry-After parsing and backoff bounds', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('3', now), 3000);
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:02 GMT', now), 2000);
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
  const o = { backoffMs: 100, maxBackoffMs: 1000, maxRetryAfterMs: 5000 };
  assert.equal(retryDelay(1, { ...o, random: () => 0 }), 50);
  assert.equal(retryDelay(1, { ...o, random: () => 1 }), 100);
  assert.equal(retryDelay(3, { ...o, random: () => 1 }), 400);
  assert.equal(retryDelay(10, { ...o, random: () => 1 }), 1000, 'capped');
  assert.equal(retryDelay(1, o, '2'), 2000, 'Retry-After wins over backoff');
  assert.equal(retryDelay(1, o, '60'), 5000, 'Retry-After is capped');
});
