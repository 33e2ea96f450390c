-- The deployment's state for webhooks, and the events its changes make. Every key shares the
-- hash tag {webhooks}, so this runs atomically on one shard: whichever gateway (or leader)
-- reports a change, each event is decided once.
--
-- KEYS: 1 the reporting node's hash (client -> user, "client|group" -> user), 2 members per
-- group, 3 connections per user, 4 occupied groups, 5 groups being vacated (score: due ms),
-- 6 outbox (list of event bodies), 7 event sequence, 8 the set of node hashes, 9 the id epoch,
-- 10 events dropped from a full outbox, 11 the node's liveness key.
-- ARGV: 1 op (connect, disconnect, join, leave, expire, vacate), 2 node, 3 client, 4 user,
-- 5 group, 6 now (ms), 7 time (RFC 3339), 8 vacate delay (ms), 9 " enabled events ",
-- 10 max backlog, 11 a fresh epoch, 12 liveness ttl (ms).
local op, node, now = ARGV[1], ARGV[2], tonumber(ARGV[6])

local function emit(event, fields)
  if not string.find(ARGV[9], ' ' .. event .. ' ', 1, true) then return end
  redis.call('SET', KEYS[9], ARGV[11], 'NX')
  local seq = redis.call('INCR', KEYS[7])
  fields.id = redis.call('GET', KEYS[9]) .. '-' .. seq
  fields.event = event
  fields.time = ARGV[7]
  redis.call('RPUSH', KEYS[6], cjson.encode(fields))
  if redis.call('LLEN', KEYS[6]) > tonumber(ARGV[10]) then
    redis.call('LPOP', KEYS[6])
    redis.call('INCR', KEYS[10])
  end
end

local function with_user(fields, user)
  if user ~= '' then fields.user = user end
  return fields
end

local function connect(client, user)
  if user == '' or redis.call('HSETNX', KEYS[1], client, user) == 0 then return end
  redis.call('SADD', KEYS[8], KEYS[1])
  if redis.call('HINCRBY', KEYS[3], user, 1) == 1 then
    emit('user_online', { user = user, client = client, node = node })
  end
end

local function disconnect(client)
  local user = redis.call('HGET', KEYS[1], client)
  if not user then return end
  redis.call('HDEL', KEYS[1], client)
  if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
    redis.call('HDEL', KEYS[3], user)
    emit('user_offline', { user = user, client = client, node = node })
  end
end

local function join(client, group, user)
  if redis.call('HSETNX', KEYS[1], client .. '|' .. group, user) == 0 then return end
  redis.call('SADD', KEYS[8], KEYS[1])
  if redis.call('HINCRBY', KEYS[2], group, 1) == 1 then
    -- Back before it was vacated: still occupied, nothing to tell.
    if redis.call('ZREM', KEYS[5], group) == 0 and redis.call('SADD', KEYS[4], group) == 1 then
      emit('group_occupied', { group = group, node = node })
    end
  end
  emit('join', with_user({ group = group, client = client, node = node }, user))
end

local function leave(client, group)
  local user = redis.call('HGET', KEYS[1], client .. '|' .. group)
  if not user then return end
  redis.call('HDEL', KEYS[1], client .. '|' .. group)
  if redis.call('HINCRBY', KEYS[2], group, -1) <= 0 then
    redis.call('HDEL', KEYS[2], group)
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), group)
  end
  emit('leave', with_user({ group = group, client = client, node = node }, user))
end

if op == 'connect' then
  connect(ARGV[3], ARGV[4])
elseif op == 'disconnect' then
  disconnect(ARGV[3])
elseif op == 'join' then
  join(ARGV[3], ARGV[5], ARGV[4])
elseif op == 'leave' then
  leave(ARGV[3], ARGV[5])
elseif op == 'expire' then
  -- A node that stopped reporting: its clients leave and go, as if they had.
  local fields = redis.call('HKEYS', KEYS[1])
  for _, field in ipairs(fields) do
    local bar = string.find(field, '|', 1, true)
    if bar then leave(string.sub(field, 1, bar - 1), string.sub(field, bar + 1)) end
  end
  for _, field in ipairs(fields) do
    if not string.find(field, '|', 1, true) then disconnect(field) end
  end
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[8], KEYS[1])
  return 0
elseif op == 'vacate' then
  local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
  for _, group in ipairs(due) do
    redis.call('ZREM', KEYS[5], group)
    if redis.call('HEXISTS', KEYS[2], group) == 0 and redis.call('SREM', KEYS[4], group) == 1 then
      emit('group_vacated', { group = group })
    end
  end
  return #due
end
if ARGV[12] ~= '' then redis.call('SET', KEYS[11], '1', 'PX', ARGV[12]) end
return 0
