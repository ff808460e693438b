-- wrk: one consistent read (GET /v1/kv/read-key?consistent=true) per
-- request; the harness sets the key first.
function request()
  return wrk.format("GET", "/v1/kv/read-key?consistent=true")
end
