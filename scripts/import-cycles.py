#!/usr/bin/env python3
"""Lists the dependencies between the product's source files and fails if they form a cycle.

An edge A -> B means that the production code of file A names a module item of file B: a `use
crate::...` / `use super::...` statement or an inline `crate::...` / `super::...` path, resolved to
the file that defines the longest module prefix of the path (`crate::queue::store::DeviceStore` ->
src/queue/store.rs, `crate::queue::Queue` -> src/queue/mod.rs). Not counted:
- test code: files named tests.rs and items under `#[cfg(test)]`;
- comments and doc comments (intra-doc links are not imports), string literals;
- a file naming one of its own ancestors (src/queue/open.rs naming `super::Queue` in
  src/queue/mod.rs): a child module belongs to its parent, that is the declaration, not a dependency.

Two checks, both must find no cycle:
1. files: the graph of every production file (src/main.rs is the binary crate and is left out);
2. top-level modules: the same edges collapsed to the top-level module of each file (`queue`,
   `sources`, `config`, ...), so that `config` and `hr`, say, do not import each other through two
   different files.

Usage: scripts/import-cycles.py [--edges] [--src DIR]
  --edges   print every edge (file level), then the top-level edges
Exit status: 0 without a cycle, 1 with one (each cycle is printed).
"""

import argparse
import os
import re
import sys


def strip_code(text):
    """The text without comments, string and char literals (replaced by spaces or empty literals)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            out.append('""')
            i = n if j < 0 else j + len(end)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_items(code):
    """Removes every item under `#[cfg(test)]` (a `mod x { ... }`, `mod x;`, `use ...;`, `fn ...`)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]", code)
        if not m:
            return code
        i = m.end()
        # the item ends at its first `;` before any `{`, or at the `}` matching its first `{`
        semi, brace = code.find(";", i), code.find("{", i)
        if brace < 0 or (0 <= semi < brace):
            end = semi + 1
        else:
            depth, j = 0, brace
            while j < len(code):
                if code[j] == "{":
                    depth += 1
                elif code[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            end = j + 1
        code = code[:m.start()] + code[end:]


def expand_use_tree(tree):
    """`a::{b, c::{d, self}}` -> [a::b, a::c::d, a::c]."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)  # `x as y` names x
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(prefix, t):
        # split t at top-level commas
        depth, start, parts = 0, 0, []
        for k, ch in enumerate(t):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(t[start:k])
                start = k + 1
        parts.append(t[start:])
        for p in parts:
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + head, rest[:-1])
            else:
                if p in ("self",):
                    paths.append(prefix.rstrip(":"))
                elif p.endswith("::self"):
                    paths.append(prefix + p[: -len("::self")])
                else:
                    paths.append(prefix + p)

    walk("", tree)
    return paths


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path (tuple) -> file
        for root, _, names in os.walk(src):
            for name in names:
                if not name.endswith(".rs"):
                    continue
                path = os.path.join(root, name)
                rel = os.path.relpath(path, src)
                if rel == "main.rs" or name == "tests.rs":
                    continue
                parts = rel[:-3].split(os.sep)
                if parts == ["lib"]:
                    mod = ()
                elif parts[-1] == "mod":
                    mod = tuple(parts[:-1])
                else:
                    mod = tuple(parts)
                self.files[mod] = path

    def module_of(self, segments):
        """The longest prefix of `segments` that is a module with its own file."""
        for k in range(len(segments), -1, -1):
            if tuple(segments[:k]) in self.files:
                return tuple(segments[:k])
        return ()

    def edges(self):
        edges = {}
        for mod, path in sorted(self.files.items()):
            with open(path, encoding="utf-8") as f:
                code = drop_test_items(strip_code(f.read()))
            targets = set()
            uses = []

            def take_use(m):
                uses.extend(expand_use_tree(m.group(1)))
                return " "

            code = re.sub(r"\buse\s+([^;]*);", take_use, code)
            inline = re.findall(r"\b((?:crate|super|self)(?:\s*::\s*[A-Za-z_][A-Za-z0-9_]*)+)", code)
            for p in uses + [re.sub(r"\s+", "", x) for x in inline]:
                segs = p.split("::")
                if segs[0] == "crate":
                    base, segs = [], segs[1:]
                elif segs[0] in ("super", "self"):
                    # a file's module path; super of `a::b` is `a`
                    base = list(mod)
                    while segs and segs[0] in ("super", "self"):
                        if segs[0] == "super":
                            base = base[:-1]
                        segs = segs[1:]
                elif mod + (segs[0],) in self.files:
                    base = list(mod)  # a child module of this one (`pub use open::open_read_only`)
                else:
                    continue  # an external crate or a local name
                target = self.module_of(base + segs)
                if target == mod or mod[: len(target)] == target:
                    continue  # itself, or one of its ancestors
                targets.add(target)
            edges[mod] = targets
        return edges


def cycles(nodes, edges):
    """The strongly connected components with more than one node (Tarjan), each as a sorted list."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def one_cycle(comp, edges):
    """One concrete cycle through the component, for the message: a -> b -> ... -> a."""
    comp = set(comp)
    start = min(comp)
    prev, queue, seen = {}, [start], {start}
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in comp and w not in seen:
                seen.add(w)
                prev[w] = v
                queue.append(w)
    return sorted(comp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    ap.add_argument("--edges", action="store_true")
    args = ap.parse_args()
    crate = Crate(os.path.normpath(args.src))
    file_edges = crate.edges()
    name = lambda m: os.path.relpath(crate.files[m], os.path.dirname(crate.src))
    top = lambda m: m[0] if m else "lib"
    top_edges = {}
    for a, bs in file_edges.items():
        for b in bs:
            if top(a) != top(b) and a and b:
                top_edges.setdefault(top(a), set()).add(top(b))
    if args.edges:
        for a in sorted(file_edges):
            for b in sorted(file_edges[a]):
                print(f"{name(a)} -> {name(b)}")
        print()
        for a in sorted(top_edges):
            print(f"{a} -> {', '.join(sorted(top_edges[a]))}")
        print()
    failed = False
    n_edges = sum(len(v) for v in file_edges.values())
    file_cycles = cycles(file_edges.keys(), file_edges)
    for comp in file_cycles:
        failed = True
        print(f"cycle between {len(comp)} files: " + " -> ".join(name(m) for m in one_cycle(comp, file_edges)))
    tops = {top(m) for m in file_edges if m}
    top_cycles = cycles(tops, top_edges)
    for comp in top_cycles:
        failed = True
        print(f"cycle between {len(comp)} top-level modules: " + " -> ".join(one_cycle(comp, top_edges)))
    print(
        f"import-cycles: {len(file_edges)} files, {n_edges} edges, {len(file_cycles)} file cycles; "
        f"{len(tops)} top-level modules, {sum(len(v) for v in top_edges.values())} edges, "
        f"{len(top_cycles)} module cycles"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
