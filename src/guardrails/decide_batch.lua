--[[
decide_batch.lua: decide.lua for several requests in one call, in order.

The Redis store prepends `local function decide_one(KEYS, ARGV, shared)`, the text of decide.lua and
`end` (src/guardrails/redis/mod.rs), so each request runs exactly the code a single `decide` call
runs, with its own KEYS and ARGV, one after another inside one atomic script: the answers are
those of calling decide.lua once per request in the same order, with nothing from another client
in between, for one round trip.

KEYS  request i's 11 keys (decide.lua's KEYS) at 11*(i-1)+1 .. 11*i
ARGV  1  n, the number of requests
      then request i's 27 arguments (decide.lua's ARGV) at 1+27*(i-1)+1 .. 1+27*i

It stops after the first answer the caller must act on before it goes on: a reservation (an
`allowed` answer to a reserve or dry_run: the caller runs that action and releases it first) or
`in_progress` (another replica holds that claim: the caller waits for it first) or
`stage_changed` (the caller decides that request again, in order, first). Exactly as one
call at a time would, the requests after it are decided only then: left untouched, not answered.

Between two requests it does what the client does between two calls: when a reply carries the
stored epoch (its first field is not ''), the worker adopts it, so the later requests remember
that epoch (ARGV 21) instead of the one the client sent.

Returns a flat array: for each request decided, in order, the length of decide.lua's reply, then
the reply.
]]

local KEYS_PER, ARGS_PER = 11, 27
local n = tonumber(ARGV[1])
local out = {}
local adopted = nil
-- One instant and one epoch check for the whole call (see decide.lua, `shared`).
local shared = {}
for i = 0, n - 1 do
  local keys, args = {}, {}
  for k = 1, KEYS_PER do
    keys[k] = KEYS[i * KEYS_PER + k]
  end
  for a = 1, ARGS_PER do
    args[a] = ARGV[1 + i * ARGS_PER + a]
  end
  if adopted then
    args[21] = adopted
  end
  local r = decide_one(keys, args, shared)
  if r[1] ~= '' then
    adopted = r[1]
  end
  out[#out + 1] = tostring(#r)
  for j = 1, #r do
    out[#out + 1] = r[j]
  end
  if (r[2] == 'allowed' and (args[8] == 'reserve' or args[8] == 'dry_run')) or r[2] == 'in_progress' or r[2] == 'stage_changed' then
    break
  end
end
return out
