// A real client stack: axios with a timeout shorter than the API's response time, and axios-retry retrying the
// same request (same Idempotency-Key header) after timeouts, network errors and 409 "in progress".
// Usage: node client.js URL KEY TIMEOUT_MS RETRIES  -> prints one JSON line.
const axios = require('axios');
const axiosRetryModule = require('axios-retry');

const axiosRetry = axiosRetryModule.default || axiosRetryModule;
const isNetworkError = axiosRetryModule.isNetworkError || axiosRetry.isNetworkError;
const [url, key, timeoutMs, retries] = process.argv.slice(2);

const client = axios.create({ timeout: Number(timeoutMs) });
let attempts = 0;
const failures = [];
client.interceptors.request.use((config) => { attempts++; return config; });
axiosRetry(client, {
  retries: Number(retries),
  shouldResetTimeout: true,
  retryDelay: () => 300,
  retryCondition: (error) =>
    isNetworkError(error) || error.code === 'ECONNABORTED' || error.code === 'ETIMEDOUT' || (error.response && error.response.status === 409),
  onRetry: (count, error) => failures.push(error.code || String(error.response && error.response.status)),
});

client
  .post(url, { amount: 42 }, { headers: { 'Idempotency-Key': key } })
  .then((response) => {
    console.log(JSON.stringify({ status: response.status, replayed: response.headers['idempotent-replayed'] || null, data: response.data, attempts, failures }));
  })
  .catch((error) => {
    console.log(JSON.stringify({ error: error.code || error.message, status: error.response && error.response.status, attempts, failures }));
    process.exitCode = 1;
  });
