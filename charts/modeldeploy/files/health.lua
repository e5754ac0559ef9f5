-- Argo CD health check for modeldeploy.io/ModelDeployment.
-- Install it as resource.customizations.health.modeldeploy.io_ModelDeployment (docs/gitops.md).
-- Written for Lua 5.1 (gopher-lua, as in Argo CD); tests/chart/test_health_lua.py runs it.
--   Healthy      Ready=True and status.observedGeneration == metadata.generation
--   Progressing  no status yet, generation not observed yet, Progressing/Reconciling=True,
--                or not ready yet without a failure
--   Degraded     Degraded/Stalled=True (the condition's message), or Ready=False while nothing
--                is progressing any more
local hs = {}

local function condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil then
    if c.message ~= nil and c.message ~= "" then
      return c.message
    end
    if c.reason ~= nil and c.reason ~= "" then
      return c.reason
    end
  end
  return fallback
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function isFalse(c)
  return c ~= nil and c.status == "False"
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modeldeploy operator to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  if observed == nil then
    hs.message = string.format("Waiting for the operator to observe generation %d", generation)
  else
    hs.message = string.format("Waiting for the operator to observe generation %d (observed %d)", generation, observed)
  end
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local degraded = condition(conditions, "Degraded")
local stalled = condition(conditions, "Stalled")
local progressing = condition(conditions, "Progressing")
local reconciling = condition(conditions, "Reconciling")

if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded, "ModelDeployment is degraded")
  return hs
end
if isTrue(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "ModelDeployment is stalled")
  return hs
end
if isTrue(progressing) or isTrue(reconciling) then
  hs.status = "Progressing"
  if isTrue(progressing) then
    hs.message = describe(progressing, "Rolling out")
  else
    hs.message = describe(reconciling, "Rolling out")
  end
  return hs
end
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "All models are ready")
  return hs
end
if isFalse(ready) and (isFalse(progressing) or isFalse(reconciling)) then
  hs.status = "Degraded"
  hs.message = describe(ready, "ModelDeployment is not ready")
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the models to become ready")
return hs
