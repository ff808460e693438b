-- wrk: one PUT /v1/kv/KEY per request, a fresh key each time, a 100-byte
-- value, the API token from $SHOAL_TOKEN.
local value = string.rep("v", 100)
local token = os.getenv("SHOAL_TOKEN") or ""
dofile("bench/peers/wrk/fresh-keys.lua")

function request()
  local path = "/v1/kv/" .. fresh_key()
  return wrk.format("PUT", path, { ["Authorization"] = "Bearer " .. token }, value)
end
