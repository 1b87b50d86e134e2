-- Argo CD health of a weft.dev NetworkNode: one node as its agent reports it (the agent writes
-- spec and status; there is no generation to wait for). docs/GITOPS.md.
--   no status yet  -> Progressing "waiting for the agent's first report"
--   Ready=True     -> Healthy, its message; networks still Pending on the node are named
--   Ready=False    -> Degraded, "Reason: message" and the networks whose programming Failed
--   no Ready       -> Progressing
-- A stale heartbeat cannot be judged here (no clock in Argo CD's Lua): watch
-- status.heartbeatTime, or the agent's DaemonSet, for a node whose agent is gone.
-- Lua 5.1 (Argo CD runs gopher-lua), no libraries beyond string/table/math.
local hs = {}

local function find(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- "a (ParentMissing), b" for the networks in the given realization state (programmed ones are
-- listed by name in status.programmed; the others, with a reason, in status.notProgrammed).
local function networks(state)
  local names = {}
  if obj.status.notProgrammed ~= nil then
    for _, n in ipairs(obj.status.notProgrammed) do
      if n.state == state then
        if n.reason ~= nil and n.reason ~= "" then
          table.insert(names, n.name .. " (" .. n.reason .. ")")
        else
          table.insert(names, n.name)
        end
      end
    end
  end
  return table.concat(names, ", ")
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "waiting for the agent's first report"
  return hs
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the agent's first report"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  local pending = networks("Pending")
  if pending ~= "" then
    hs.message = hs.message .. "; pending: " .. pending
  end
  return hs
end

hs.status = "Degraded"
hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
local failed = networks("Failed")
if failed ~= "" then
  hs.message = hs.message .. "; failed: " .. failed
end
return hs
