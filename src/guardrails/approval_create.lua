--[[
approval_create.lua: store a new pending approval, timed by Redis TIME.

KEYS
  1  appr:<id>    hash  json (the approval, immutable part), state, approver, expires_at, action_hash
  2  approvals    zset  id -> expires_at (ms); the index of pending approvals
ARGV
  1  id   2  json   3  action_hash   4  ttl_ms
Returns { created_at_ms, expires_at_ms } (strings). The hash outlives its expiry by one day so a
late answer is refused as "expired", not "not found".
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'state', 'pending', 'action_hash', ARGV[3],
  'expires_at', string.format('%d', expires), 'created_at', string.format('%d', now))
redis.call('PEXPIREAT', KEYS[1], expires + 86400000)
redis.call('ZADD', KEYS[2], expires, ARGV[1])
return { string.format('%d', now), string.format('%d', expires) }
