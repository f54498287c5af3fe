-- wrk script: POST pregenerated, individually signed deliveries, one per request, in order.
-- The file (first script argument) holds one delivery per line: path?query TAB signature TAB body.
-- Every body is distinct (unique event ids and participant SIDs), so each request is a new
-- delivery and the exporter's duplicate path is not what gets measured. Loaded once in init:
-- reading files per request would make the client the bottleneck.
local requests = {}
local index = 0

function init(args)
   local file = assert(io.open(args[1], "r"))
   for line in file:lines() do
      local path, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", path,
         {["X-Twilio-Signature"] = signature, ["Content-Type"] = "application/json"}, body)
   end
   file:close()
end

function request()
   index = index % #requests + 1
   return requests[index]
end

function done(summary, latency, requests)
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
