// Idem's browser and Node client: one Idempotency-Key per user intent, reused by every retry of that intent.
// No dependencies, no bundler, no global state: everything lives in the client, operation and guard objects.

const DEFAULTS = Object.freeze({
  baseUrl: '',
  headerName: 'Idempotency-Key',
  timeoutMs: 10_000,
  maxAttempts: 4,
  retryOn: Object.freeze([409, 502, 503, 504]),
  backoffMs: 250,
  maxBackoffMs: 5_000,
  maxRetryAfterMs: 10_000,
});

// Without a key only methods that are idempotent by definition may be sent twice.
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/** Base class of everything this module throws (except the caller's own abort reason). */
export class IdemError extends Error {
  constructor(message, { idempotencyKey, attempts, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'IdemError';
    this.idempotencyKey = idempotencyKey;
    this.attempts = attempts;
  }
}

/** A response with a status outside 2xx; problem+json bodies fill `title`, `detail`, `type` and `requestId`. */
export class HttpError extends IdemError {
  constructor(response, body, { idempotencyKey, attempts }) {
    const problem = isProblem(response, body) ? body : undefined;
    const title = problem?.title ?? (response.statusText || `HTTP ${response.status}`);
    const detail = problem?.detail;
    super(`${response.status} ${title}${detail ? `: ${detail}` : ''}`, { idempotencyKey, attempts });
    this.name = 'HttpError';
    this.status = response.status;
    this.title = title;
    this.detail = detail;
    this.type = problem?.type;
    this.problem = problem;
    this.body = body;
    this.headers = response.headers;
    this.requestId = problem?.requestId ?? response.headers.get('X-Request-Id') ?? undefined;
    this.replayed = response.headers.get('Idempotent-Replayed') === 'true';
  }
}

/** 422: the key was already used for a different request (another body, path or method). Never retried. */
export class IdempotencyKeyReusedError extends HttpError {
  constructor(response, body, info) {
    super(response, body, info);
    this.name = 'IdempotencyKeyReusedError';
  }
}

/** Every attempt ran past the client's own timeout. */
export class TimeoutError extends IdemError {
  constructor(timeoutMs, info) {
    super(`No response within ${timeoutMs} ms`, info);
    this.name = 'TimeoutError';
    this.timeoutMs = timeoutMs;
  }
}

/** The request never got a response: refused, reset or dropped connection. */
export class NetworkError extends IdemError {
  constructor(cause, info) {
    super(`Network error: ${cause?.message ?? cause}`, { ...info, cause });
    this.name = 'NetworkError';
  }
}

/** A new random key; one per user intent. */
export function newIdempotencyKey() {
  return globalThis.crypto.randomUUID();
}

/**
 * Delay before retry number `retry` (1 for the first retry): Retry-After when the server sent one (capped at
 * `maxRetryAfterMs`), otherwise capped exponential backoff with jitter (half fixed, half random), so clients that
 * failed together do not retry together.
 */
export function retryDelay(retry, { backoffMs, maxBackoffMs, maxRetryAfterMs, random = Math.random }, retryAfter, now = Date.now()) {
  const fromHeader = parseRetryAfter(retryAfter, now);
  if (fromHeader !== undefined) return Math.min(fromHeader, maxRetryAfterMs);
  const ceiling = Math.min(maxBackoffMs, backoffMs * 2 ** (retry - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === '') return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** A client: base URL, timeouts and retry settings shared by the operations it creates. */
export class IdemClient {
  #options;

  constructor(options = {}) {
    this.#options = { ...DEFAULTS, ...options };
    const o = this.#options;
    if (!(o.maxAttempts >= 1)) throw new RangeError('maxAttempts must be at least 1');
    if (!(o.timeoutMs > 0)) throw new RangeError('timeoutMs must be positive');
    this.#options.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The effective options (defaults merged with the constructor's). */
  get options() {
    return { ...this.#options };
  }

  /**
   * One logical operation: its key is made now and every `send()` of it (a retry after a failure included)
   * reuses it. Create a new operation for a new intent.
   */
  operation(method, path, body, options = {}) {
    return new IdempotentOperation(this, method, path, body, options);
  }

  /** POST once: a new operation, sent (with its retries). */
  post(path, body, options = {}) {
    return this.operation('POST', path, body, options).send(options);
  }

  /** PATCH once: a new operation, sent (with its retries). */
  patch(path, body, options = {}) {
    return this.operation('PATCH', path, body, options).send(options);
  }
}

// Runs the attempts of one operation: the same key, method, URL and body bytes on every attempt.
async function run(clientOptions, op, overrides) {
  const o = { ...clientOptions, ...op.settings, ...overrides };
  const info = () => ({ idempotencyKey: op.key, attempts });
  const retryable = op.key !== undefined || IDEMPOTENT_METHODS.has(op.method);
  let attempts = 0;
  for (;;) {
    attempts++;
    op.attempts = attempts;
    throwIfAborted(o.signal);
    const attempt = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; attempt.abort(); }, o.timeoutMs);
    const unlink = link(o.signal, attempt);
    let failure;
    let retryAfter;
    try {
      const response = await o.fetch(op.url, {
        method: op.method,
        headers: op.headersFor(),
        body: op.body,
        signal: attempt.signal,
        credentials: o.credentials,
      });
      const body = await readBody(response);
      if (response.ok) {
        return {
          status: response.status,
          data: body,
          headers: response.headers,
          replayed: response.headers.get('Idempotent-Replayed') === 'true',
          requestId: response.headers.get('X-Request-Id') ?? undefined,
          idempotencyKey: op.key,
          attempts,
        };
      }
      const error = response.status === 422
        ? new IdempotencyKeyReusedError(response, body, info())
        : new HttpError(response, body, info());
      if (!o.retryOn.includes(response.status)) throw error;
      failure = error;
      retryAfter = response.headers.get('Retry-After');
    } catch (error) {
      if (error instanceof IdemError && !(failure === error)) throw error;
      if (o.signal?.aborted) throw o.signal.reason;
      if (failure === undefined) failure = timedOut ? new TimeoutError(o.timeoutMs, info()) : new NetworkError(error, info());
    } finally {
      clearTimeout(timer);
      unlink();
    }
    failure.attempts = attempts;
    if (attempts >= o.maxAttempts || !retryable) throw failure;
    o.onRetry?.({ attempt: attempts, error: failure, idempotencyKey: op.key });
    await sleep(retryDelay(attempts, o, retryAfter), o.signal);
  }
}

/** One user intent: a fixed key, method, URL and body bytes (serialized once, so every retry has the same fingerprint). */
export class IdempotentOperation {
  #client;
  #pending;
  #result;

  constructor(client, method, path, body, options = {}) {
    const o = client.options;
    this.#client = client;
    this.method = String(method).toUpperCase();
    this.url = joinUrl(o.baseUrl, path);
    this.key = options.idempotencyKey === null ? undefined : (options.idempotencyKey ?? newIdempotencyKey());
    this.headerName = o.headerName;
    this.extraHeaders = { ...o.headers, ...options.headers };
    if (body !== undefined && !isRawBody(body)) {
      this.body = JSON.stringify(body);
      this.contentType = 'application/json';
    } else {
      this.body = body;
    }
    this.settings = pick(options, ['timeoutMs', 'maxAttempts', 'retryOn', 'backoffMs', 'maxBackoffMs', 'maxRetryAfterMs', 'onRetry']);
    this.attempts = 0;
  }

  /** True once a send succeeded; the operation then always returns that result. */
  get done() {
    return this.#result !== undefined;
  }

  /** True while a send is in flight. */
  get inFlight() {
    return this.#pending !== undefined;
  }

  /**
   * Sends the operation, retrying with the same key. A second call while one is in flight gets the same promise;
   * a call after a success gets the same result; a call after a failure tries again with the same key.
   */
  send(options = {}) {
    if (this.#result !== undefined) return Promise.resolve(this.#result);
    if (this.#pending !== undefined) return this.#pending;
    const overrides = pick(options, ['signal', 'timeoutMs', 'maxAttempts', 'onRetry']);
    this.#pending = run(this.#client.options, this, overrides).then(
      (result) => { this.#result = result; this.#pending = undefined; return result; },
      (error) => { this.#pending = undefined; throw error; });
    return this.#pending;
  }

  /** @internal */
  headersFor() {
    const headers = new Headers(this.extraHeaders);
    if (this.contentType && !headers.has('Content-Type')) headers.set('Content-Type', this.contentType);
    if (!headers.has('Accept')) headers.set('Accept', 'application/json, application/problem+json');
    if (this.key !== undefined) headers.set(this.headerName, this.key);
    return headers;
  }
}

/**
 * Guards a form against double submission: while a submission is in flight its submit controls are disabled and
 * the form is aria-busy; another submit is ignored and counted. One key per intent: a failed submission retried
 * with the same fields reuses its key; a success or changed fields start a new one. With `channel`, a second tab
 * of the same origin submitting the same fields while the first is in flight joins the first tab's key and result
 * (BroadcastChannel) instead of sending a second request.
 *
 * @returns {FormGuard}
 */
export function guardForm(form, options) {
  return new FormGuard(form, options);
}

export class FormGuard {
  #form;
  #options;
  #op;
  #opIntent;
  #pending;
  #channel;
  #peers = new Map(); // intent -> { key, waiters: [] }
  #sending; // { intent, key } while this tab sends one
  #recent = new Map(); // intent -> { message, at }: successes of this tab (to tell new tabs) and of others
  #ready = Promise.resolve();
  #onSubmit;

  constructor(form, { client, request, onResult, onError, onStateChange, channel, joinTimeoutMs, helloMs = 500, joinWindowMs = 5_000 } = {}) {
    if (!form) throw new TypeError('form is required');
    if (!(client instanceof IdemClient)) throw new TypeError('client must be an IdemClient');
    if (typeof request !== 'function') throw new TypeError('request(formData, form) => ({ method, path, body }) is required');
    this.#form = form;
    this.#options = { client, request, onResult, onError, onStateChange, joinWindowMs, joinTimeoutMs: joinTimeoutMs ?? client.options.timeoutMs * client.options.maxAttempts };
    /** Submissions ignored because one was in flight. */
    this.ignored = 0;
    /** Submissions that sent (or joined) an operation. */
    this.submitted = 0;
    /** Submissions that joined another tab's in-flight operation. */
    this.joined = 0;
    this.#onSubmit = (event) => {
      event.preventDefault();
      this.submit(event.submitter).catch(() => {}); // reported through onError
    };
    form.addEventListener('submit', this.#onSubmit);
    if (channel && typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(`idem:${channel}`);
      this.#channel.onmessage = (event) => this.#onPeerMessage(event.data);
      this.#post({ type: 'hello' });
      this.#ready = new Promise((resolve) => setTimeout(resolve, helloMs));
    }
  }

  /** The key of the current intent, if one was made. */
  get currentKey() {
    return this.#op?.key;
  }

  /** True while a submission is in flight. */
  get busy() {
    return this.#pending !== undefined;
  }

  /** Submits the form's current fields; while one is in flight, returns its promise and counts an ignored submit. */
  submit(submitter) {
    if (this.#pending !== undefined) {
      this.ignored++;
      this.#notify();
      return this.#pending;
    }
    const { request } = this.#options;
    const spec = request(new FormData(this.#form, submitter ?? undefined), this.#form);
    this.submitted++;
    this.#setBusy(true);
    // A tab opened a moment ago first hears which intents the other tabs have in flight.
    const run = this.#ready.then(() => this.#start(spec));
    this.#pending = run.then(
      (result) => {
        if (result.joined) this.#op = undefined; // the other tab's success ends this intent here too
        this.#finish(); this.#options.onResult?.(result); return result;
      },
      (error) => { this.#finish(); this.#options.onError?.(error); throw error; });
    return this.#pending;
  }

  #start(spec) {
    const intent = JSON.stringify([String(spec.method ?? 'POST').toUpperCase(), spec.path, spec.body ?? null]);
    const done = this.#recentFor(intent, false);
    if (done) { // another tab finished this very submission a moment ago: its result, no second request
      this.joined++;
      return Promise.resolve({ ...done.result, headers: new Headers(), joined: true });
    }
    const peer = this.#peers.get(intent);
    if (this.#op === undefined || this.#op.done || this.#opIntent !== intent) {
      this.#op = this.#options.client.operation(spec.method ?? 'POST', spec.path, spec.body,
        { ...spec.options, ...(peer ? { idempotencyKey: peer.key } : {}) });
      this.#opIntent = intent;
    }
    const op = this.#op;
    return peer && op.key === peer.key ? this.#join(peer, op, spec.options) : this.#send(op, intent, spec.options);
  }

  /** Stops listening to the form and to other tabs. */
  destroy() {
    this.#form.removeEventListener('submit', this.#onSubmit);
    this.#channel?.close();
  }

  async #send(op, intent, options) {
    this.#sending = { intent, key: op.key };
    this.#post({ type: 'start', ...this.#sending });
    try {
      const result = await op.send(options);
      const message = { type: 'done', intent, key: op.key, result: portable(result) };
      this.#recent.set(intent, { message, at: Date.now(), own: true });
      this.#post(message);
      return result;
    } catch (error) {
      this.#post({ type: 'failed', intent, key: op.key });
      throw error;
    } finally {
      this.#sending = undefined;
    }
  }

  // Another tab is sending this intent: wait for its answer; if it fails, or goes quiet (closed tab), send the same
  // key ourselves, which the server answers with the stored response or by waiting for the first tab's request.
  async #join(peer, op, options) {
    this.joined++;
    const answer = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), this.#options.joinTimeoutMs);
      peer.waiters.push((message) => { clearTimeout(timer); resolve(message); });
    });
    if (answer?.type === 'done') return { ...answer.result, headers: new Headers(), joined: true };
    return op.send(options);
  }

  #onPeerMessage(message) {
    if (message?.type === 'hello') { // a new tab: tell it what is in flight here and what just succeeded
      if (this.#sending) this.#post({ type: 'start', ...this.#sending });
      for (const [intent, entry] of this.#recent) {
        if (entry.own && this.#recentFor(intent, true)) this.#post(entry.message);
      }
      return;
    }
    if (!message || typeof message.intent !== 'string') return;
    if (message.type === 'start') {
      this.#peers.set(message.intent, { key: message.key, waiters: [] });
      return;
    }
    if (message.type === 'done') this.#recent.set(message.intent, { message, at: Date.now(), own: false });
    const peer = this.#peers.get(message.intent);
    if (!peer || peer.key !== message.key) return;
    this.#peers.delete(message.intent);
    for (const waiter of peer.waiters) waiter(message);
  }

  // A success of this tab (own) or of another tab for this intent within joinWindowMs.
  #recentFor(intent, own) {
    const entry = this.#recent.get(intent);
    if (!entry) return undefined;
    if (Date.now() - entry.at > this.#options.joinWindowMs) { this.#recent.delete(intent); return undefined; }
    return entry.own === own ? entry.message : undefined;
  }

  #post(message) {
    this.#channel?.postMessage(message);
  }

  #finish() {
    this.#pending = undefined;
    this.#setBusy(false);
  }

  #setBusy(busy) {
    this.#form.setAttribute('aria-busy', String(busy));
    for (const control of this.#form.querySelectorAll('button[type=submit], input[type=submit], button:not([type])')) {
      control.disabled = busy;
    }
    this.#notify();
  }

  #notify() {
    this.#options.onStateChange?.({ busy: this.busy, ignored: this.ignored, submitted: this.submitted, joined: this.joined, key: this.currentKey });
  }
}

function portable(result) {
  const { headers, ...rest } = result;
  return rest;
}

function isRawBody(body) {
  return typeof body === 'string'
    || (typeof FormData !== 'undefined' && body instanceof FormData)
    || (typeof URLSearchParams !== 'undefined' && body instanceof URLSearchParams)
    || (typeof Blob !== 'undefined' && body instanceof Blob)
    || body instanceof ArrayBuffer
    || ArrayBuffer.isView(body);
}

function isProblem(response, body) {
  const type = response.headers.get('Content-Type') ?? '';
  return body !== null && typeof body === 'object' && (type.includes('problem+json') || 'title' in body || 'detail' in body);
}

async function readBody(response) {
  const text = await response.text();
  if (text === '') return null;
  const type = response.headers.get('Content-Type') ?? '';
  if (type.includes('json')) {
    try { return JSON.parse(text); } catch { return text; }
  }
  return text;
}

function joinUrl(base, path) {
  if (!base || /^[a-z][a-z0-9+.-]*:/i.test(path)) return path;
  return base.replace(/\/+$/, '') + '/' + String(path).replace(/^\/+/, '');
}

function pick(source, names) {
  const out = {};
  for (const name of names) if (source[name] !== undefined) out[name] = source[name];
  return out;
}

function throwIfAborted(signal) {
  if (signal?.aborted) throw signal.reason;
}

// Forwards the caller's abort to one attempt's controller; returns the unsubscribe.
function link(signal, controller) {
  if (!signal) return () => {};
  if (signal.aborted) { controller.abort(signal.reason); return () => {}; }
  const forward = () => controller.abort(signal.reason);
  signal.addEventListener('abort', forward, { once: true });
  return () => signal.removeEventListener('abort', forward);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(signal.reason); return; }
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
    const onAbort = () => { clearTimeout(timer); reject(signal.reason); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
