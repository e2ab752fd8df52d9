-- wrk script for benchmarks/run.sh: POST /orders with a JSON body and an Idempotency-Key header.
--
--   wrk ... -s orders.lua http://127.0.0.1:PORT -- new    <run-id>   a unique key per request
--   wrk ... -s orders.lua http://127.0.0.1:PORT -- replay <key>      the same key on every request
--   a third argument replaces the JSON body ({"amount":42}); the gateway benchmark sends a 30-byte one
--
-- Both modes build every request the same way (request() + wrk.format), so the client does the same work per
-- request in every case, the bare baseline included (which sends new keys that nothing reads).
-- done() prints one machine-readable line starting with "BENCH" that the benchmark driver parses.

local threads = {}

function setup(thread)
   thread:set("thread_id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   mode = args[1] or "new"
   local seed = args[2] or "run"
   if mode == "replay" then
      fixed_key = seed
   else
      math.randomseed(os.time() + thread_id * 7919)
      -- run id + thread id + random: unique across threads, runs and warm-ups.
      prefix = string.format("%s-t%d-%08x-", seed, thread_id, math.random(0, 0x7fffffff))
   end
   counter = 0
   wrk.method = "POST"
   wrk.path = "/orders"
   wrk.body = args[3] or '{"amount":42}'
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   counter = counter + 1
   if mode == "replay" then
      wrk.headers["Idempotency-Key"] = fixed_key
   else
      wrk.headers["Idempotency-Key"] = prefix .. counter
   end
   return wrk.format()
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f "
      .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
      e.connect, e.read, e.write, e.status, e.timeout))
end
