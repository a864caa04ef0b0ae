--[[
approval_summary.lua: how many approvals wait and when the oldest was created, without reading
any approval (what every replica's gauges ask every 15 s).

KEYS
  1  approvals          zset  id -> expires_at ms (pending index)
  2  approvals_created  zset  id -> created_at ms (same ids by age)
Returns { count, oldest_created_ms or '' }. Expired entries leave the index; ids no longer in it
(answered, expired) leave the age index as they reach its head, each once.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
local count = redis.call('ZCARD', KEYS[1])
local oldest = ''
while true do
  local r = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #r == 0 then
    break
  end
  if redis.call('ZSCORE', KEYS[1], r[1]) then
    oldest = r[2]
    break
  end
  redis.call('ZREM', KEYS[2], r[1])
end
return { string.format('%d', count), oldest }
