-- wrk script for the intake benchmark: POST non-consequential directives spread over
-- many incidents, each with a unique Idempotency-Key; counts 202 answers.
-- wrk -t2 -c32 -d10s -s bench/wrk_directives.lua URL -- PREFIX N TOKEN RUN
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1]
  n = tonumber(args[2])
  token = args[3]
  run = args[4]
  counter = 0
  accepted = 0
  other = 0
end

function request()
  counter = counter + 1
  local inc = prefix .. string.format("%04d", (counter * 7 + tid * 13) % n)
  local body
  if counter % 2 == 0 then
    body = '{"action":{"action":"update_incident_record","note":"bench note"},"based_on_sequence":2}'
  else
    body = '{"action":{"action":"gather_state","regions":["us-east"]},"based_on_sequence":2}'
  end
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. counter,
  }
  return wrk.format("POST", "/v1/incidents/" .. inc .. "/directives", headers, body)
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    o = o + t:get("other")
  end
  io.write(string.format(
    'WRK_RESULT {"accepted": %d, "other": %d, "requests": %d, "seconds": %f, ' ..
    '"errors": %d, "p50_ms": %f, "p99_ms": %f}\n',
    a, o, summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
