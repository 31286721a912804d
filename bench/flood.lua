-- wrk script: one kind of hostile request at full speed, counting answers by status.
-- BENCH_FLOOD: badsig (a well-formed submission, wrongly signed), junk (60 KiB of
-- junk, wrongly signed), unknown_source, wrong_type (text/plain), too_large (one
-- byte over the 64 KiB default) or honeypot (a browser form with the trap filled).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function junk(size)
  local chunk = {}
  for i = 1, 1024 do chunk[i] = string.char(math.random(33, 126)) end
  return string.rep(table.concat(chunk), math.floor(size / 1024))
end

function init(args)
  counts = {}
  local kind = os.getenv("BENCH_FLOOD")
  local signed = {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = "msg_flood",
    ["webhook-timestamp"] = tostring(os.time()),
    ["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
  }
  local submission = '{"name":"Flood","email":"flood@example.fi","message":"x"}'
  if kind == "badsig" then
    req = wrk.format("POST", "/v1/forms/bench", signed, submission)
  elseif kind == "junk" then
    req = wrk.format("POST", "/v1/forms/bench", signed, junk(60 * 1024))
  elseif kind == "unknown_source" then
    req = wrk.format("POST", "/v1/forms/no-such-source", signed, submission)
  elseif kind == "wrong_type" then
    signed["Content-Type"] = "text/plain"
    req = wrk.format("POST", "/v1/forms/bench", signed, submission)
  elseif kind == "too_large" then
    req = wrk.format("POST", "/v1/forms/bench", signed, junk(64 * 1024) .. "x")
  elseif kind == "honeypot" then
    req = wrk.format("POST", "/v1/forms/web", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Origin"] = "https://www.example.fi",
      ["Accept"] = "application/json",
    }, "name=Bot&email=bot%40example.fi&message=spam&website=http%3A%2F%2Fspam.example")
  else
    error("unknown BENCH_FLOOD " .. tostring(kind))
  end
end

function request()
  return req
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for status, n in pairs(c) do total[status] = (total[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(total) do table.insert(parts, status .. ":" .. n) end
  table.sort(parts)
  io.write(string.format("FLOOD requests=%d duration_us=%d statuses=%s socket_errors=%d\n",
    summary.requests, summary.duration, table.concat(parts, ","),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
