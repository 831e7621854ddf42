-- Password logins through the login pages, one connection per thread: GET /authorize (a new
-- login; the first one also sets the browser cookie), GET /login (the form and its CSRF
-- token), POST /login (argon2id, session, code).
-- USERNAME and PASSWORD name the account. Prints completed logins and their rate.
-- NEW_CONNECTION=1 closes the connection after each request.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  step, logins, failures = 1, 0, 0
  started = os.time()
  body_tail = "&option=password&username=" .. os.getenv("USERNAME") .. "&password=" .. os.getenv("PASSWORD")
  close = os.getenv("NEW_CONNECTION") == "1"
end

local function headers(extra)
  local h = extra or {}
  if close then h["Connection"] = "close" end
  return h
end

function request()
  if step == 1 then
    local cookie = browser and { Cookie = "idflow_browser=" .. browser } or nil
    return wrk.format("GET", "/authorize?client_id=demo-web&response_type=code&scope=openid&state=s"
      .. "&redirect_uri=http%3A%2F%2Flocalhost%3A8000%2Fcallback", headers(cookie))
  elseif step == 2 then
    return wrk.format("GET", "/login?login=" .. handle, headers({ Cookie = "idflow_browser=" .. browser }))
  else
    return wrk.format("POST", "/login", headers({
      Cookie = "idflow_browser=" .. browser,
      ["Content-Type"] = "application/x-www-form-urlencoded",
    }), "login=" .. handle .. "&csrf=" .. csrf .. body_tail)
  end
end

function response(status, h, body)
  if step == 1 then
    local cookie = h["set-cookie"] or h["Set-Cookie"] or ""
    browser = cookie:match("idflow_browser=([^;]+)") or browser
    local location = h["location"] or h["Location"] or ""
    handle = location:match("login=([^&]+)")
    step = (handle and browser) and 2 or 1
  elseif step == 2 then
    csrf = body:match('name="csrf" value="([^"]+)"')
    step = csrf and 3 or 1
  else
    local location = h["location"] or h["Location"] or ""
    if status == 303 and location:find("code=", 1, true) then
      logins = logins + 1
    else
      failures = failures + 1
    end
    step = 1
  end
end

function done(summary, latency, requests)
  local total, failed = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("logins")
    failed = failed + thread:get("failures")
  end
  local seconds = summary.duration / 1e6
  io.write(string.format("logins: %d in %.1f s = %.1f logins/s (%d failed)\n", total, seconds, total / seconds, failed))
end
