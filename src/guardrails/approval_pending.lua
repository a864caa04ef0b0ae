--[[
approval_pending.lua: the approvals still waiting, oldest expiry first.

KEYS
  1     approvals    zset index of pending approvals (id -> expires_at ms)
  2..n  appr:<id>    the hash of each id the caller read from the index (ZRANGE), in its order
ARGV
  1..n-1  the ids (as stored in the index) of KEYS[2..n]
Returns a flat array: json, created_at, expires_at for each of them still pending and not expired
(every key it touches is declared, so the script is valid on Redis Cluster and under ACLs).
Expired entries are dropped from the index on the way.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
local out = {}
for i = 2, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'json', 'state', 'created_at', 'expires_at')
  if r[1] and r[2] == 'pending' and tonumber(r[4]) >= now and redis.call('ZSCORE', KEYS[1], ARGV[i - 1]) then
    out[#out + 1] = r[1]
    out[#out + 1] = r[3]
    out[#out + 1] = r[4]
  end
end
return out
