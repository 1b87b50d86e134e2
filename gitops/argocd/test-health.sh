#!/usr/bin/env bash
# Runs every Argo CD health check under gitops/argocd/health/<group>/<Kind>/health.lua against
# its testdata, as Argo CD's own resource_customizations tests do: each entry of health_test.yaml
# names an input object (inputPath) and the expected healthStatus (status and message).
#
# The scripts run in a real Lua interpreter, with only what Argo CD's sandbox offers (the global
# `obj`, base functions, string, table, math; no io/os): Lua 5.1, the language of gopher-lua that
# Argo CD embeds, and Lua 5.4. Missing interpreters are installed with apt-get.
#
#   gitops/argocd/test-health.sh              run the tests
#   gitops/argocd/test-health.sh --write-cm   also regenerate gitops/argocd/argocd-cm.yaml
#
# Needs python3 with PyYAML (WEFT_PY overrides the interpreter; .ci/chart-check passes its venv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${WEFT_PY:-python3}
"$py" -c 'import yaml' 2>/dev/null || { echo "test-health: $py has no PyYAML (pip install PyYAML, or set WEFT_PY)" >&2; exit 1; }

luas=()
for v in 5.1 5.4; do
  if ! command -v "lua$v" >/dev/null; then
    echo "test-health: installing lua$v"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "lua$v" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "lua$v" >/dev/null; } ||
      { echo "test-health: cannot install lua$v with apt-get" >&2; exit 1; }
  fi
  luas+=("lua$v")
done

exec "$py" - "$here" "${1:-}" "${luas[@]}" <<'PY'
import glob, os, subprocess, sys, tempfile
import yaml

here, mode, *luas = sys.argv[1:]

class Loader(yaml.SafeLoader):
    """Kubernetes objects reach Argo CD as JSON: timestamps stay strings."""
Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda l, n: l.construct_scalar(n))

def lua(v):
    """A Lua literal of a JSON-like value (what Argo CD hands the script as `obj`)."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        out = []
        for ch in v:
            if ch in '\\"':
                out.append("\\" + ch)
            elif 32 <= ord(ch) < 127:
                out.append(ch)
            else:
                out.extend("\\%d" % b for b in ch.encode())
        return '"' + "".join(out) + '"'
    if isinstance(v, list):
        return "{" + ", ".join(lua(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{lua(k)}] = {lua(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))

HARNESS = r'''
local obj_file, script_file = arg[1], arg[2]
local obj = dofile(obj_file)
local f = assert(io.open(script_file, "r"))
local src = f:read("*a")
f:close()
-- Argo CD's sandbox: base functions, string, table, math, and the object. No io, os, require.
local env = { obj = obj, ipairs = ipairs, pairs = pairs, next = next, select = select,
  tostring = tostring, tonumber = tonumber, type = type, error = error, pcall = pcall,
  assert = assert, unpack = unpack or table.unpack, string = string, table = table, math = math }
local chunk
if setfenv then
  chunk = assert(loadstring(src, "=health.lua"))
  setfenv(chunk, env)
else
  chunk = assert(load(src, "=health.lua", "t", env))
end
local hs = chunk()
assert(type(hs) == "table", "health.lua must return a table")
io.write(tostring(hs.status), "\n", tostring(hs.message), "\n")
'''

scripts = sorted(glob.glob(os.path.join(here, "health", "*", "*", "health.lua")))
if not scripts:
    sys.exit("test-health: no health.lua under " + os.path.join(here, "health"))
passed = failed = 0
with tempfile.TemporaryDirectory() as tmp:
    harness = os.path.join(tmp, "harness.lua")
    open(harness, "w").write(HARNESS)
    for script in scripts:
        d = os.path.dirname(script)
        group, kind = d.split(os.sep)[-2:]
        tests = yaml.load(open(os.path.join(d, "health_test.yaml")), Loader=Loader)["tests"]
        inputs = {os.path.relpath(p, d) for p in glob.glob(os.path.join(d, "testdata", "*.yaml"))}
        for untested in sorted(inputs - {t["inputPath"] for t in tests}):
            print(f"FAIL {group}/{kind}: {untested} is in no test of health_test.yaml"); failed += 1
        for t in tests:
            obj = yaml.load(open(os.path.join(d, t["inputPath"])), Loader=Loader)
            obj_file = os.path.join(tmp, "obj.lua")
            open(obj_file, "w").write("return " + lua(obj) + "\n")
            want = (t["healthStatus"]["status"], t["healthStatus"].get("message", ""))
            for interp in luas:
                r = subprocess.run([interp, harness, obj_file, script], capture_output=True, text=True)
                name = f"{group}/{kind} {t['inputPath']} ({interp})"
                if r.returncode != 0:
                    print(f"FAIL {name}: {r.stderr.strip()}"); failed += 1
                    continue
                got = tuple(r.stdout.split("\n")[:2])
                if got == want:
                    passed += 1
                else:
                    print(f"FAIL {name}:\n     want {want[0]} {want[1]!r}\n     got  {got[0]} {got[1]!r}"); failed += 1
        print(f"ok   {group}/{kind}: {len(tests)} cases x {len(luas)} interpreters")

# The argocd-cm snippet carries the same scripts (resource.customizations.health.<group>_<Kind>).
cm_file = os.path.join(here, "argocd-cm.yaml")
entries = []
for script in scripts:
    group, kind = os.path.dirname(script).split(os.sep)[-2:]
    body = open(script).read().rstrip("\n")
    entries.append(f"  resource.customizations.health.{group}_{kind}: |\n"
                   + "\n".join(("    " + line).rstrip() for line in body.split("\n")) + "\n")
cm = ("# argocd-cm entries for Weft's health checks, generated from gitops/argocd/health/*/*/health.lua\n"
      "# by `gitops/argocd/test-health.sh --write-cm` (.ci/chart-check fails when they differ).\n"
      "# Merge them into the argocd-cm ConfigMap of your Argo CD installation, e.g. with\n"
      "#   kubectl -n argocd patch configmap argocd-cm --patch-file gitops/argocd/argocd-cm.yaml\n"
      "# or, with the argo-cd Helm chart, under configs.cm.\n"
      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n"
      "  labels:\n    app.kubernetes.io/name: argocd-cm\n    app.kubernetes.io/part-of: argocd\ndata:\n"
      + "".join(entries))
if mode == "--write-cm":
    open(cm_file, "w").write(cm)
    print(f"wrote {os.path.relpath(cm_file)}")
elif not os.path.exists(cm_file) or open(cm_file).read() != cm:
    print(f"FAIL {cm_file} is not generated from the health.lua files: run gitops/argocd/test-health.sh --write-cm"); failed += 1
print(f"health checks: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
