-- client_credentials grants: POST /token with HTTP Basic client authentication.
-- BASIC: base64 of "client:secret". NEW_CONNECTION=1 closes the connection after each request.
wrk.method = "POST"
wrk.path = "/token"
wrk.body = "grant_type=client_credentials&scope=api.read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BASIC")
if os.getenv("NEW_CONNECTION") == "1" then
  wrk.headers["Connection"] = "close"
end

function done(summary, latency, requests)
  io.write(string.format("latency p50 %.2f ms p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
