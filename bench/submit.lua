-- wrk script: cycle through pre-signed, distinct submissions (one per line:
-- webhook-id TAB webhook-timestamp TAB webhook-signature TAB body) and count answers.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  ids, stamps, sigs, bodies = {}, {}, {}, {}
  local n = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    local id, ts, sig, body = line:match("^(.-)\t(.-)\t(.-)\t(.*)$")
    n = n + 1
    ids[n], stamps[n], sigs[n], bodies[n] = id, ts, sig, body
  end
  total = n
  nthreads = tonumber(os.getenv("BENCH_THREADS"))
  idx = tid + 1
  ok, bad = 0, 0
end

function request()
  local i = idx
  idx = idx + nthreads
  if idx > total then idx = tid + 1 end
  return wrk.format("POST", os.getenv("BENCH_PATH"), {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = ids[i],
    ["webhook-timestamp"] = stamps[i],
    ["webhook-signature"] = sigs[i],
  }, bodies[i])
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local okt, badt = 0, 0
  for _, t in ipairs(threads) do
    okt = okt + t:get("ok")
    badt = badt + t:get("bad")
  end
  io.write(string.format("BENCH ok=%d bad=%d requests=%d duration_us=%d p50_us=%d p99_us=%d "
    .. "socket_errors=%d\n", okt, badt, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
