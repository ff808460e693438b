-- Shared by the put scripts: each wrk thread numbers itself, and
-- fresh_key() returns a key no request of the run used before.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0

function fresh_key()
  counter = counter + 1
  return string.format("w-%d-%d", tid, counter)
end
