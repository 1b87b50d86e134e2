-- Argo CD health of a weft.dev ContainerEndpoint (one sandbox attached to one network). Its
-- status is written by the agent of spec.node, by the kstatus conventions (docs/GITOPS.md).
--   no status yet                                   -> Progressing "waiting for the node agent"
--   status or Ready older than metadata.generation  -> Progressing (the spec change is not seen yet)
--   Reconciling=True                                -> Progressing, its message
--   Stalled=True                                    -> Degraded, "Reason: message"
--   Ready=False with a reason only the user can fix
--     (AddressInUse, OutsideSubnet, PortConflict,
--      SandboxNotAllowed)                         -> Degraded, "Reason: message"
--   Ready=True                                      -> Healthy, its message
--   anything else (SandboxMissing, NetworkNotReady) -> Progressing, its message
-- Lua 5.1 (Argo CD runs gopher-lua), no libraries beyond string/table/math.
local hs = {}

local USER_ERRORS = { AddressInUse = true, OutsideSubnet = true, PortConflict = true, SandboxNotAllowed = true }

local function find(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason or ""
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "waiting for the node agent"
  return hs
end

local generation = obj.metadata.generation
local function stale(observed)
  return generation ~= nil and observed ~= nil and observed < generation
end

local ready = find(status.conditions, "Ready")
if stale(status.observedGeneration) or (ready ~= nil and stale(ready.observedGeneration)) then
  hs.status = "Progressing"
  hs.message = "waiting for the node agent to observe generation " .. tostring(generation)
  return hs
end

local reconciling = find(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = text(reconciling)
  return hs
end

local stalled = find(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready)
  return hs
end

if ready ~= nil and ready.status == "False" and USER_ERRORS[ready.reason or ""] then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. (ready.message or "")
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = text(ready)
else
  hs.message = "waiting for the node agent"
end
return hs
