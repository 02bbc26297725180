-- One pass over session cookies for benches/scale.sh (run wrk with -t1): lines FIRST..LAST of
-- TOKENS, one request each, then wrk stops; in a cold pass every request names a session the
-- gateway has not cached. Counts the answers that are not as wanted: 200 (WANT=200, the
-- default), or anything but 200 (WANT=refused: dismissed sessions must not get through).
-- Usage: wrk -t1 -cN -s scale_pass.lua URL -- TOKENS FIRST LAST [WANT]
local thread_handle

function setup(thread)
  thread_handle = thread
end

function init(args)
  local path, first, last = args[1], tonumber(args[2]), tonumber(args[3])
  want_ok = (args[4] or "200") == "200"
  tokens = {}
  local n = 0
  for line in io.lines(path) do
    if n > last then break end
    if n >= first then tokens[#tokens + 1] = line end
    n = n + 1
  end
  next_token, answered, wrong = 0, 0, 0
end

function request()
  -- The last few in flight when the pass ends repeat early cookies (warm, and few).
  local t = tokens[next_token % #tokens + 1]
  next_token = next_token + 1
  return wrk.format("GET", "/scale", { Cookie = "portcullis_session=" .. t })
end

function response(status)
  answered = answered + 1
  if (status == 200) ~= want_ok then wrong = wrong + 1 end
  if answered >= #tokens then wrk.thread:stop() end
end

function done(summary, latency, requests)
  io.write(string.format("PASS requests=%d wrong=%d rps=%.0f p99_ms=%.2f\n",
    summary.requests, thread_handle:get("wrong"),
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000))
end
