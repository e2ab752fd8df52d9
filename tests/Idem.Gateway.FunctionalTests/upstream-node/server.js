// An Express API that knows nothing about Idem: it counts executions per operation so the tests can see duplicates.
// POST /:op?delayMs=N&failFirst=N  -> 201 {id, execution, bodySha256, requestId}; like many servers, it abandons
// the work (and counts it as cancelled) when the caller goes away before it is done.
const express = require('express');
const crypto = require('crypto');

const app = express();
const counts = { started: {}, completed: {}, cancelled: {} };
const bump = (table, op) => (table[op] = (table[op] || 0) + 1);

app.use(express.raw({ type: () => true, limit: '50mb' }));

app.post('/:op', async (req, res) => {
  const op = req.params.op;
  const n = bump(counts.started, op);
  let gone = false;
  res.on('close', () => { if (!res.writableFinished) gone = true; });
  const delay = Number(req.query.delayMs || 0);
  if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
  if (gone) { bump(counts.cancelled, op); return; }
  bump(counts.completed, op);
  if (n <= Number(req.query.failFirst || 0)) {
    res.status(500).json({ error: 'upstream failure', execution: n });
    return;
  }
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  res.status(201).location(`/${op}/${n}`).json({
    id: crypto.randomUUID(),
    execution: n,
    bodyLength: body.length,
    bodySha256: crypto.createHash('sha256').update(body).digest('hex').toUpperCase(),
    requestId: req.get('x-request-id') || null,
  });
});

app.get('/_counts/:op', (req, res) => {
  const op = req.params.op;
  res.json({ started: counts.started[op] || 0, completed: counts.completed[op] || 0, cancelled: counts.cancelled[op] || 0 });
});

const server = app.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
