// A deliberately faulty HTTP server for the client's tests. It keeps Idem's promise on its own side (one execution
// per key, the stored answer replayed with Idempotent-Replayed, a request for a key in flight waits for it) and
// misbehaves on the first attempt of every key the way networks and servers do:
//   /drop      runs the handler, stores its answer, then drops the connection without answering
//   /stall     runs a slow handler (stallMs), so the client's own timeout fires while it runs
//   /busy      answers 503 with Retry-After (no execution), then behaves
//   /conflict  answers 409 with Retry-After (no execution), then behaves
//   /bad       always 400 problem+json;  /mismatch  always 422 problem+json
import http from 'node:http';

export async function startFaultyServer({ stallMs = 1500, retryAfter = '1' } = {}) {
  const records = new Map(); // key -> Promise<{status, headers, body}>
  const seen = new Map(); // key -> attempts
  const stats = { executions: 0, requests: 0, byPath: {} };
  const sockets = new Set();

  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString('utf8');
    const path = req.url.split('?')[0];
    stats.requests++;
    stats.byPath[path] = (stats.byPath[path] ?? 0) + 1;
    const key = req.headers['idempotency-key'];
    const attempt = (seen.get(key) ?? 0) + 1;
    if (key) seen.set(key, attempt);

    if (path === '/bad') return problem(res, 400, 'Bad request', 'name is required');
    if (path === '/mismatch') return problem(res, 422, 'Idempotency key reused', 'The key was used with another request.');
    if (path === '/busy' && attempt === 1) return problem(res, 503, 'Store unavailable', 'Try again.', { 'Retry-After': retryAfter });
    if (path === '/conflict' && attempt === 1) return problem(res, 409, 'Request in flight', 'Try again.', { 'Retry-After': retryAfter });

    const execute = async () => {
      stats.executions++;
      if (path === '/stall') await new Promise((r) => setTimeout(r, stallMs));
      return { status: 201, body: JSON.stringify({ id: stats.executions, echo: body ? JSON.parse(body) : null }) };
    };
    let replayed = false;
    let answer;
    if (key && records.has(key)) {
      replayed = true;
      answer = await records.get(key);
    } else {
      const running = execute();
      if (key) records.set(key, running);
      answer = await running;
    }
    if (path === '/drop' && attempt === 1) {
      req.socket.destroy(); // the handler ran and its answer is stored; the client never hears of it
      return;
    }
    res.writeHead(answer.status, {
      'Content-Type': 'application/json',
      'X-Request-Id': `req-${stats.requests}`,
      ...(replayed ? { 'Idempotent-Replayed': 'true' } : {}),
    });
    res.end(answer.body);
  });
  server.on('connection', (socket) => { sockets.add(socket); socket.on('close', () => sockets.delete(socket)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    attemptsOf: (key) => seen.get(key) ?? 0,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function problem(res, status, title, detail, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/problem+json', 'X-Request-Id': `req-${status}`, ...headers });
  res.end(JSON.stringify({ type: 'about:blank', title, status, detail, requestId: `problem-${status}` }));
}
