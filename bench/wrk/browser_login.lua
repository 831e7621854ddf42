-- Authorization-code logins as a browser without JavaScript makes them, for any OpenID
-- Provider whose login page is an HTML form: GET AUTHORIZE_PATH, follow redirects on the
-- server, fill in the form that has a password field (its hidden fields, USERNAME and
-- PASSWORD), follow redirects until one reaches REDIRECT_URI, then exchange the code at
-- TOKEN_PATH with HTTP Basic (BASIC is base64 of "client:secret"). A login counts when the
-- token endpoint answers 200 with an access token.
--
-- Every login starts with an empty cookie jar, so each one checks the password: no single
-- sign-on. Run with one connection per thread (-t N -c N). Prints completed logins, their rate
-- and the 50th and 99th percentile of a whole login's duration (first request to tokens),
-- timed with the monotonic clock through LuaJIT's FFI because wrk's own latency figures are
-- per request.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) / 1e9
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function unescape_html(s)
  return (s:gsub("&amp;", "&"):gsub("&#(%d+);", function(n) return string.char(tonumber(n)) end))
end

-- Cookie attributes, which a folded Set-Cookie line (see bench/oidc-provider) mixes with names.
local attributes = { path = true, expires = true, domain = true, samesite = true, ["max-age"] = true }

function init(args)
  authorize = os.getenv("AUTHORIZE_PATH")
  redirect = os.getenv("REDIRECT_URI")
  token_path = os.getenv("TOKEN_PATH") or "/token"
  basic = "Basic " .. os.getenv("BASIC")
  credentials = "username=" .. urlencode(os.getenv("USERNAME")) .. "&password=" .. urlencode(os.getenv("PASSWORD"))
  logins, failures, durations = 0, 0, {}
  failure_sample = ""
  start_login()
end

function start_login()
  jar, next_request, started = {}, { method = "GET", path = authorize }, nil
end

local function cookie_header()
  local parts = {}
  for name, value in pairs(jar) do table.insert(parts, name .. "=" .. value) end
  return table.concat(parts, "; ")
end

local function remember_cookies(headers)
  local line = headers["set-cookie"] or headers["Set-Cookie"]
  if not line then return end
  for name, value in line:gmatch("([%w_%.%-]+)=([^;,]*)") do
    if not attributes[name:lower()] then
      if value == "" then jar[name] = nil else jar[name] = value end
    end
  end
end

local function fail(status, body)
  failures = failures + 1
  if failure_sample == "" then failure_sample = status .. " " .. (body or ""):sub(1, 200) end
  start_login()
end

function request()
  if not started then started = now() end
  local r = next_request
  local headers = { Cookie = cookie_header() }
  if r.method == "POST" then headers["Content-Type"] = "application/x-www-form-urlencoded" end
  if r.basic then headers["Authorization"] = basic end
  return wrk.format(r.method, r.path, headers, r.body)
end

-- The form with a password field: its action and its hidden fields with the credentials.
local function password_form(body)
  for form in body:gmatch("<form(.-)</form>") do
    if form:find('type="password"', 1, true) then
      local action = unescape_html(form:match('action="([^"]*)"') or "")
      local fields = {}
      for input in form:gmatch("<input([^>]*)>") do
        if input:find('type="hidden"', 1, true) then
          local name, value = input:match('name="([^"]*)"'), input:match('value="([^"]*)"') or ""
          if name then table.insert(fields, urlencode(name) .. "=" .. urlencode(unescape_html(value))) end
        end
      end
      table.insert(fields, credentials)
      return action, table.concat(fields, "&")
    end
  end
end

function response(status, headers, body)
  remember_cookies(headers)
  local location = headers["location"] or headers["Location"]
  if next_request.basic then
    if status == 200 and body:find('"access_token"', 1, true) then
      logins = logins + 1
      table.insert(durations, now() - started)
      start_login()
    else
      fail(status, body)
    end
  elseif status >= 300 and status < 400 and location then
    if location:sub(1, #redirect) == redirect then
      local code = location:match("[?&]code=([^&]+)")
      if not code then return fail(status, location) end
      next_request = { method = "POST", path = token_path, basic = true,
        body = "grant_type=authorization_code&code=" .. code .. "&redirect_uri=" .. urlencode(redirect) }
    else
      next_request = { method = "GET", path = location:gsub("^https?://[^/]+", "") }
    end
  elseif status == 200 then
    local action, form = password_form(body)
    if not action or next_request.method == "POST" then return fail(status, body) end
    next_request = { method = "POST", path = action, body = form }
  else
    fail(status, body)
  end
end

function done(summary, latency, requests)
  local total, failed, all, sample = 0, 0, {}, ""
  for _, thread in ipairs(threads) do
    total = total + thread:get("logins")
    failed = failed + thread:get("failures")
    for _, d in ipairs(thread:get("durations")) do table.insert(all, d) end
    if sample == "" then sample = thread:get("failure_sample") end
  end
  table.sort(all)
  local function percentile(p)
    if #all == 0 then return 0 end
    return all[math.max(1, math.ceil(#all * p / 100))] * 1000
  end
  local seconds = summary.duration / 1e6
  io.write(string.format("logins: %d in %.1f s = %.1f logins/s (%d failed) p50 %.1f ms p99 %.1f ms\n",
    total, seconds, total / seconds, failed, percentile(50), percentile(99)))
  if sample ~= "" then io.write("first failure: " .. sample .. "\n") end
end
