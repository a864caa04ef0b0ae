--[[
approval_pending.lua: the approvals still waiting, oldest expiry first.

KEYS
  1  approvals    zset index of pending approvals (id -> expires_at ms)
ARGV
  1  key prefix of approval hashes ('{p}:appr:'); ids are appended escaped by the caller's rule,
     so the index stores the escaped id
Returns a flat array: json, created_at, expires_at for each pending approval.
Expired entries are dropped from the index on the way.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'json', 'state', 'created_at', 'expires_at')
  if r[1] and r[2] == 'pending' then
    out[#out + 1] = r[1]
    out[#out + 1] = r[3]
    out[#out + 1] = r[4]
  end
end
return out
