-- wrk script: POST pregenerated, individually signed deliveries, one per request, in order.
-- Arguments: the request file, the index to start at, and "wrap" or "once".
-- The file holds one delivery per line: path?query TAB signature TAB body. Every body is distinct
-- (unique event ids and participant SIDs), so each request is a new delivery and the exporter's
-- duplicate path is not what gets measured. Loaded once in init: reading files per request
-- would make the client the bottleneck.
-- "once": a delivery is never sent twice, even across runs against the same server (the harness
-- passes the previous run's "sent" as the next start); past the end of the file, requests go to
-- /exhausted (a 404, counted as non-2xx), so a file too small for the rate shows instead of
-- replaying deliveries the exporter already recorded. "wrap" (the bare handler) starts over.
local requests = {}
index = 0
local wrap = false
local threads = {}
total = 0

function setup(thread)
   threads[#threads + 1] = thread
end

function init(args)
   local file = assert(io.open(args[1], "r"))
   for line in file:lines() do
      local path, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", path,
         {["X-Twilio-Signature"] = signature, ["Content-Type"] = "application/json"}, body)
   end
   file:close()
   total = #requests
   index = tonumber(args[2] or "0")
   wrap = args[3] == "wrap"
end

local exhausted = wrk.format("GET", "/exhausted")

function request()
   index = index + 1
   if index > #requests then
      if not wrap then
         return exhausted
      end
      index = 1
   end
   return requests[index]
end

function done(summary, latency, requests)
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "sent_until": %d, "file_size": %d}\n',
      summary.requests, summary.duration, summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max, threads[1]:get("index"), threads[1]:get("total")))
end
