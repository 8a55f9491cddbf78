-- wrk script for the benchmark: each request carries the next cookie of a file, in order, so the load
-- spreads over every seeded session (and a long enough run uses each of them).
-- Arguments after `--`: <cookie file, one "name=value" per line> <path> [N: say when N responses came]
-- [extra "Name: value" headers ...] (the external-authorization runs name the original request in them)
-- `done` prints one line "BENCHJSON {...}" that bench/_load.py parses (latencies in microseconds).

local requests = {}
local count = 0
local next_index = 0
local limit = 0
local responses = 0

local function headers(cookie, extra)
  local h = { ["X-CSRF"] = "1", ["Accept"] = "application/json" }
  if cookie then
    h["Cookie"] = cookie
  end
  for name, value in pairs(extra) do
    h[name] = value
  end
  return h
end

function init(args)
  local path = args[2]
  limit = tonumber(args[3] or "0") or 0
  local extra = {}
  for i = 4, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    if name then
      extra[name] = value
    end
  end
  for line in io.lines(args[1]) do
    count = count + 1
    requests[count] = wrk.format("GET", path, headers(line, extra))
  end
  if count == 0 then
    requests[1] = wrk.format("GET", path, headers(nil, extra))
    count = 1
  end
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

if os.getenv("BENCH_WRK_LIMIT") then
  -- Defined only when a run must stop after N responses: a `response` function makes wrk parse every
  -- response's headers, which would cost the ordinary runs throughput. wrk itself runs for its whole -d,
  -- so the marker tells bench/_load.py to stop it (SIGINT), which keeps wrk's duration and req/s honest.
  function response(status, headers, body)
    responses = responses + 1
    if responses == limit then
      io.write("BENCHLIMIT\n")
      io.stdout:flush()
    end
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
