#!/usr/bin/env python3
"""Import graph of node-agent/src at file level, production code only (`#[cfg(test)]` modules
and test-only files are left out), from `crate::…`, `super::…` and child-module paths; prints
every cycle (a strongly connected component of more than one file). Usage:
`python3 node-agent/tools/import_cycles.py [node-agent/src] [--edges]`."""
import os, re, sys
root = next((a for a in sys.argv[1:] if not a.startswith('--')), 'node-agent/src')
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.relpath(os.path.join(d, f), root)
            files[p] = open(os.path.join(d, f)).read()

def module_of(p):
    parts = p[:-3].split('/')
    if parts[-1] in ('mod', 'lib', 'main'):
        parts = parts[:-1]
    return parts

def file_of(mod):
    """Longest prefix of the module path that is a file."""
    for n in range(len(mod), -1, -1):
        base = '/'.join(mod[:n])
        for cand in ([base + '.rs', base + '/mod.rs'] if base else ['lib.rs']):
            if cand in files:
                return cand
    return None

def production(src):
    # drop `#[cfg(test)] mod x { … }` bodies and `#[cfg(test)] mod x;` declarations
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*(;|\{)', src):
        if m.start() < i:
            continue
        out.append(src[i:m.start()])
        if m.group(3) == ';':
            i = m.end()
            continue
        depth, j = 1, m.end()
        while depth and j < len(src):
            depth += {'{': 1, '}': -1}.get(src[j], 0)
            j += 1
        i = j
    out.append(src[i:])
    return ''.join(out)

test_only = {p for p in files if re.search(r'(tests|testutil)(\.rs|/)', p)}
edges = {}
for p, src in files.items():
    if p in test_only:
        continue
    src = production(re.sub(r'//[^\n]*', '', src))
    me = module_of(p)
    deps = set()
    for m in re.finditer(r'\b(crate|super)((?:::\w+)+)', src):
        segs = m.group(2).strip(':').split('::')
        base = [] if m.group(1) == 'crate' else me[:-1] if p.endswith(('mod.rs',)) is False else me[:-1]
        if m.group(1) == 'super':
            base = me[:-1]
            while segs and segs[0] == 'super':
                base, segs = base[:-1], segs[1:]
        target = file_of(base + segs)
        if target and target != p and target not in test_only:
            deps.add(target)
    # `use crate::x::{a, b::c}` groups
    for m in re.finditer(r'\b(crate|super)((?:::\w+)*)::\{([^;]*?)\};', src):
        prefix = m.group(2).strip(':').split('::') if m.group(2) else []
        base = [] if m.group(1) == 'crate' else me[:-1]
        for item in re.split(r',\s*', m.group(3)):
            item = item.strip().split(' as ')[0].strip('{} ')
            if not item or item == 'self':
                continue
            t = file_of(base + prefix + item.split('::'))
            if t and t != p and t not in test_only:
                deps.add(t)
    # paths through a child module this file declares (`mod x;` … `x::y`)
    for child in re.findall(r'^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', src, re.M):
        for m in re.finditer(r'(?<![:\w])%s((?:::\w+)+)' % child, src):
            t = file_of(me + [child] + m.group(1).strip(':').split('::'))
            if t and t != p and t not in test_only:
                deps.add(t)
    edges[p] = deps

# a parent module file (mod.rs/lib.rs) naturally "uses" children by declaring them: not an edge
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))
for v in sorted(edges):
    if v not in index:
        strong(v)
if '--edges' in sys.argv:
    for v in sorted(edges):
        print(v, '->', ', '.join(sorted(edges[v])))
for c in sccs:
    print('CYCLE:', ' <-> '.join(c))
    for v in c:
        print('   ', v, '->', ', '.join(sorted(w for w in edges[v] if w in c)))
print(f'{len(edges)} production files, {sum(map(len, edges.values()))} edges, {len(sccs)} cycles')
sys.exit(1 if sccs else 0)
