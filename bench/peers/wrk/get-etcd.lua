-- wrk: one linearizable etcd range of one key (POST /v3/kv/range through
-- its JSON gateway, etcd's default consistency) per request; the harness
-- puts the key first. "cmVhZC1rZXk=" is base64 of "read-key".
local body = '{"key":"cmVhZC1rZXk="}'

function request()
  return wrk.format("POST", "/v3/kv/range", { ["Content-Type"] = "application/json" }, body)
end
