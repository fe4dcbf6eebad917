-- Shared by every wrk run of bench/ratios.py: at the end, one line "WRK_JSON {...}" on stdout with the
-- summary, the latency percentiles (microseconds) and, when the script counted them, the HTTP statuses.
-- bench/ratios.py puts a generated prelude (globals) before this file and, for writes, post_records.lua after.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local function encode(value)
  local kind = type(value)
  if kind == "table" then
    local parts = {}
    for k, v in pairs(value) do
      table.insert(parts, string.format("%q:%s", tostring(k), encode(v)))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "number" then
    return string.format("%.17g", value)
  elseif kind == "nil" then
    return "null"
  else
    return string.format("%q", tostring(value))
  end
end

function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    local counted = thread:get("statuses")
    if counted then
      for status, n in pairs(counted) do
        statuses[status] = (statuses[status] or 0) + n
      end
    end
  end
  local report = {
    requests = summary.requests, duration_us = summary.duration, bytes = summary.bytes,
    errors = {connect = summary.errors.connect, read = summary.errors.read, write = summary.errors.write,
              status = summary.errors.status, timeout = summary.errors.timeout},
    latency_us = {min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
                  p50 = latency:percentile(50), p90 = latency:percentile(90), p99 = latency:percentile(99),
                  p999 = latency:percentile(99.9)},
    statuses = statuses,
  }
  io.write("WRK_JSON " .. encode(report) .. "\n")
end
