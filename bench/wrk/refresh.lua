-- Refresh grants with rotation: each thread owns a share of the refresh tokens in TOKENS_FILE,
-- spends one per request and takes the rotated token from the response. Needs at least two
-- tokens per connection. NEW_CONNECTION=1 closes the connection after each request.
local threads, next_id = {}, 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  queue, failures = {}, 0
  local count, i = tonumber(os.getenv("WRK_THREADS")), 0
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if i % count == id then table.insert(queue, line) end
    i = i + 1
  end
  headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "Basic " .. os.getenv("BASIC"),
  }
  if os.getenv("NEW_CONNECTION") == "1" then headers["Connection"] = "close" end
end

function request()
  local token = table.remove(queue, 1)
  if not token then
    -- Every token this thread had was refused: stop rather than send garbage.
    io.write("refresh: out of tokens after a failure: " .. (failure_sample or "") .. "\n")
    os.exit(1)
  end
  return wrk.format("POST", "/token", headers, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token then
    table.insert(queue, token)
  else
    failures = failures + 1
    if not failure_sample then failure_sample = status .. " " .. body:sub(1, 200) end
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("failures")
    local sample = thread:get("failure_sample")
    if sample then io.write("a refused refresh: " .. sample .. "\n") end
  end
  io.write(string.format("refresh failures: %d\n", total))
  io.write(string.format("latency p50 %.2f ms p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
