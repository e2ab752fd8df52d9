// The demo page's script: clients/js as it is (served at /js/idem.js), a guard on each form, and buttons that
// misbehave on purpose. Counters: what this tab sent, what the server created and the server's Idem outcomes (GET /stats).
import { IdemClient, guardForm, TimeoutError, HttpError } from './js/idem.js';

const counters = { requests: 0, retries: 0, replays: 0 };
// Rows /stats reports beyond the four the page lists first.
const STAT_LABELS = { executions: 'Order executions', orders: 'Orders', projects: 'Projects' };
const $ = (selector) => document.querySelector(selector);

// Counts every HTTP attempt this tab makes, retries included.
const countingFetch = (input, init) => {
  counters.requests++;
  render();
  return fetch(input, init);
};

const client = new IdemClient({
  fetch: countingFetch,
  timeoutMs: 10_000,
  maxAttempts: 4,
  onRetry: ({ attempt, error }) => {
    counters.retries++;
    log(`attempt ${attempt} failed (${describe(error)}); retrying with the same key`);
    render();
  },
});

// The first /stats this page read: the panel shows what was created since.
let baseline;

// Options for the next community submission only (the misbehaving buttons set them).
let nextOptions;

const communityForm = $('#create-community');
const communityGuard = guardForm(communityForm, {
  client,
  channel: 'create-community',
  request: (data) => ({
    method: 'POST',
    path: '/communities',
    body: { name: String(data.get('name') ?? '').trim(), delayMs: Number(data.get('delayMs') || 0) },
    options: takeOptions(),
  }),
  onResult: (result) => {
    if (result.replayed) counters.replays++;
    const c = result.data ?? {};
    $('#community-result').textContent =
      `Created “${c.name}” (slug ${c.slug}, id ${c.id}) in ${result.attempts} attempt(s)` +
      `${result.replayed ? ', answer replayed by the server' : ''}${result.joined ? ', joined from another tab' : ''}.`;
    log(`POST /communities → ${result.status}${result.replayed ? ' (replayed)' : ''}${result.joined ? ' (joined another tab)' : ''}, key ${short(result.idempotencyKey)}`);
    refreshStats();
  },
  onError: (error) => {
    $('#community-result').textContent = `Not created: ${describe(error)}.`;
    log(`POST /communities failed: ${describe(error)}`);
    refreshStats();
  },
  onStateChange: render,
});

const chatForm = $('#create-chat');
const chatGuard = guardForm(chatForm, {
  client,
  channel: 'create-chat',
  request: (data) => ({ method: 'POST', path: '/chats', body: { participants: ['me', String(data.get('with'))] } }),
  onResult: (result) => {
    if (result.replayed) counters.replays++;
    const chat = result.data ?? {};
    $('#chat-result').textContent = `Chat ${chat.id} (${chat.participantsKey}), HTTP ${result.status}.`;
    log(`POST /chats → ${result.status}, chat ${chat.id}`);
    refreshStats();
  },
  onError: (error) => {
    $('#chat-result').textContent = `No chat: ${describe(error)}.`;
    log(`POST /chats failed: ${describe(error)}`);
  },
  onStateChange: render,
});

function takeOptions() {
  const options = nextOptions;
  nextOptions = undefined;
  return options;
}

function prepare(delayMs) {
  const name = $('#community-name');
  if (!name.value.trim()) name.value = `Community ${new Date().toLocaleTimeString()}`;
  communityForm.elements.delayMs.value = String(delayMs);
}

$('#misbehave-double').addEventListener('click', () => {
  prepare(600);
  communityForm.requestSubmit();
  communityForm.requestSubmit(); // the same instant: ignored by the guard, counted
});

$('#misbehave-tab').addEventListener('click', () => {
  prepare(2500);
  communityForm.requestSubmit();
  const params = new URLSearchParams({ name: $('#community-name').value, delayMs: '2500', autosubmit: '1' });
  window.open(`/?${params}`, '_blank');
});

$('#misbehave-timeout').addEventListener('click', async () => {
  prepare(1200);
  nextOptions = { timeoutMs: 400, maxAttempts: 1 };
  try {
    await communityGuard.submit();
  } catch (error) {
    if (!(error instanceof TimeoutError)) return;
    log('gave up after 400 ms; retrying in 1.5 s with the same key');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    communityGuard.submit().catch(() => {}); // same fields after a failure: the same key
  }
});

$('#misbehave-slow').addEventListener('click', () => {
  prepare(2500);
  nextOptions = { timeoutMs: 800, maxAttempts: 8 };
  communityForm.requestSubmit();
});

$('#misbehave-raw').addEventListener('click', async () => {
  prepare(300);
  const key = crypto.randomUUID();
  const body = JSON.stringify({ name: $('#community-name').value.trim(), delayMs: 300 });
  const send = () => countingFetch('/communities', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
    body,
  });
  const responses = await Promise.all([send(), send()]);
  const replayed = responses.filter((r) => r.headers.get('Idempotent-Replayed') === 'true').length;
  counters.replays += replayed;
  log(`two raw requests with key ${short(key)} → ${responses.map((r) => r.status).join(' and ')}, ${replayed} replayed`);
  refreshStats();
});

// A second tab opened by "Submit here and from a second tab": fill the form and submit it at once.
const params = new URLSearchParams(location.search);
if (params.get('autosubmit') === '1') {
  $('#community-name').value = params.get('name') ?? '';
  communityForm.elements.delayMs.value = params.get('delayMs') ?? '0';
  history.replaceState(null, '', '/');
  communityForm.requestSubmit();
}

async function refreshStats() {
  try {
    const response = await fetch('/stats', { headers: { Accept: 'application/json' } });
    if (!response.ok) return;
    const stats = await response.json();
    baseline ??= stats;
    for (const [name, value] of Object.entries(stats)) {
      if (typeof value !== 'number') continue;
      if (!document.getElementById(`stat-${name}`)) {
        const row = document.createElement('tr');
        row.innerHTML = '<th scope="row"></th><td></td><td></td>';
        row.children[0].textContent = STAT_LABELS[name] ?? name[0].toUpperCase() + name.slice(1);
        row.children[1].id = `stat-${name}`;
        row.children[2].id = `new-${name}`;
        $('#server-stats').append(row);
      }
      document.getElementById(`stat-${name}`).textContent = String(value);
      document.getElementById(`new-${name}`).textContent = `+${value - (baseline[name] ?? 0)}`;
    }
    // The server's idem.requests counter by outcome (an object outcome → count), in its own table.
    for (const [outcome, value] of Object.entries(stats.idem ?? {})) {
      if (typeof value !== 'number') continue;
      if (!document.getElementById(`idem-${outcome}`)) {
        const row = document.createElement('tr');
        row.innerHTML = '<th scope="row"></th><td></td><td></td>';
        row.children[0].textContent = outcome;
        row.children[1].id = `idem-${outcome}`;
        row.children[2].id = `idem-new-${outcome}`;
        $('#idem-stats').append(row);
      }
      document.getElementById(`idem-${outcome}`).textContent = String(value);
      document.getElementById(`idem-new-${outcome}`).textContent = `+${value - (baseline.idem?.[outcome] ?? 0)}`;
    }
  } catch {
    // the next poll tries again
  }
}

function render() {
  $('#client-requests').textContent = String(counters.requests);
  $('#client-retries').textContent = String(counters.retries);
  $('#client-replays').textContent = String(counters.replays);
  $('#client-ignored').textContent = String(communityGuard?.ignored + chatGuard?.ignored || 0);
  $('#client-joined').textContent = String(communityGuard?.joined + chatGuard?.joined || 0);
}

function log(text) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('#log').prepend(item);
  while ($('#log').children.length > 50) $('#log').lastChild.remove();
}

function describe(error) {
  if (error instanceof HttpError) return `${error.status} ${error.title}${error.detail ? `: ${error.detail}` : ''}`;
  return error?.message ?? String(error);
}

function short(key) {
  return key ? `${key.slice(0, 8)}…` : '(none)';
}

render();
refreshStats();
setInterval(() => { if (document.visibilityState === 'visible') refreshStats(); }, 1000);
