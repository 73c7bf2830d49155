#!/usr/bin/env python3
"""Checks the crate's shape (../shared/STYLE.md, "Crate layout"):

1. The module `use` graph is a DAG: no module reaches, through the paths it
   names (`use crate::..`, `use super::..`, a child module's path, or an
   inline `crate::a::b` path), back to itself. Nodes are modules (one per
   file; `mod.rs` is its folder's module); an edge goes from a module to the
   deepest module a path it names resolves to. Unit tests (`#[cfg(test)]`
   to the end of a file) and comments are left out: they are not layering.
2. Layers point down: the application shell (app, main, demo) is imported
   by nothing but the crate root and main; the core (clock, shared,
   snapshot, metrics, events, error, endpoint, stats, tls, request_id) and
   the pure modules (config, release) import nothing from the request path
   (server, proxy, upstream), the control plane (control, admin) or the
   shell.
3. No source file over MAX_FILE_LINES lines; no function over
   MAX_FN_LINES lines on the request path (server, proxy, upstream).

Prints each problem and exits 1, or prints a summary and exits 0.
Usage: scripts/check-layers.py [--graph]   (--graph prints every edge)
"""

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
MAX_FILE_LINES = 600
MAX_FN_LINES = 80
REQUEST_PATH = ("server", "proxy", "upstream")
SHELL = {"app", "main", "demo", "ctl"}
CORE_AND_PURE = {
    "clock", "shared", "snapshot", "metrics", "events", "error", "endpoint",
    "stats", "tls", "request_id", "config", "release",
}
ABOVE_CORE = {"server", "proxy", "upstream", "control", "admin"} | SHELL


def module_of(path: pathlib.Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def code_of(text: str) -> str:
    """The file without its unit tests and comments."""
    cut = text.find("#[cfg(test)]")
    if cut != -1:
        text = text[:cut]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*$", "", line) for line in text.splitlines())


def expand_use(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace == -1:
        return [re.sub(r"\bas\w+$", "", tree)]
    prefix, inner = tree[:brace], tree[brace + 1:-1]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    out = []
    for item in filter(None, items):
        for path in expand_use(item):
            out.append(prefix + path if path != "self" else prefix.rstrip(":"))
    return out


def resolve(segments: list, here: tuple, modules: set):
    """The deepest known module `segments` (from `here`) lands in."""
    if not segments:
        return None
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    elif segments[0] == "super":
        base, rest = here, segments
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif segments[0] == "self":
        base, rest = here, segments[1:]
    elif here + (segments[0],) in modules:
        base, rest = here, segments
    else:
        return None
    found = base if base in modules or base == () else None
    current = base
    for seg in rest:
        current = current + (seg,)
        if current in modules:
            found = current
        else:
            break
    return found


def graph(files: dict, modules: set) -> dict:
    edges = {m: set() for m in modules}
    for module, code in files.items():
        paths = []
        for tree in re.findall(r"\buse\s+([^;]+);", code):
            paths.extend(expand_use(tree))
        paths.extend(re.findall(r"\b(?:crate|super)(?:::\w+)+", code))
        children = {m[-1] for m in modules if m[:-1] == module and len(m) == len(module) + 1}
        for child in children:
            paths.extend(re.findall(rf"(?<![\w:]){child}(?:::\w+)+", code))
        for path in paths:
            target = resolve([s for s in path.split("::") if s], module, modules)
            if target is not None and target != module and target != ():
                edges[module].add(target)
    return edges


def cycles(edges: dict) -> list:
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def long_functions(path: pathlib.Path, text: str) -> list:
    """(name, line, length) of functions longer than MAX_FN_LINES."""
    lines = text.split("\n")
    cut = text.find("#[cfg(test)]")
    end = text[:cut].count("\n") if cut != -1 else len(lines)
    out = []
    for i in range(end):
        m = re.match(r"\s*(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+)?fn\s+(\w+)", lines[i])
        if not m:
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        for j in range(i, end):
            line = lines[j]
            if line.rstrip().endswith(";") and j == i:
                break
            if line.startswith(" " * indent + "}") and len(line) - len(line.lstrip()) == indent:
                if j - i + 1 > MAX_FN_LINES:
                    out.append((m.group(1), i + 1, j - i + 1))
                break
    return out


def main() -> int:
    files, texts = {}, {}
    for path in sorted(SRC.rglob("*.rs")):
        text = path.read_text()
        module = module_of(path)
        texts[path] = text
        files[module] = code_of(text)
    modules = set(files)
    edges = graph(files, modules)
    problems = []
    for cycle in cycles(edges):
        problems.append("import circle: " + " -> ".join("::".join(m) or "crate" for m in cycle))
    for module, targets in edges.items():
        if not module:
            continue  # the crate root only declares modules and re-exports
        top = module[0]
        for target in targets:
            if target[0] in SHELL and top not in SHELL:
                problems.append(f"{'::'.join(module)} imports the shell module {'::'.join(target)}")
            if top in CORE_AND_PURE and target[0] in ABOVE_CORE:
                problems.append(f"{'::'.join(module)} (core) imports {'::'.join(target)} from above it")
    for path, text in texts.items():
        count = text.count("\n")
        rel = path.relative_to(SRC.parent)
        if count > MAX_FILE_LINES:
            problems.append(f"{rel}: {count} lines (over {MAX_FILE_LINES})")
        if module_of(path)[:1] and module_of(path)[0] in REQUEST_PATH:
            for name, line, length in long_functions(path, text):
                problems.append(f"{rel}:{line}: fn {name} is {length} lines (over {MAX_FN_LINES})")
    if "--graph" in sys.argv:
        for module in sorted(edges):
            for target in sorted(edges[module]):
                print(f"{'::'.join(module) or 'crate'} -> {'::'.join(target)}")
    for problem in problems:
        print(problem)
    if problems:
        return 1
    edge_count = sum(len(t) for t in edges.values())
    print(f"layers ok: {len(modules)} modules, {edge_count} edges, no circle; "
          f"files <= {MAX_FILE_LINES} lines; request-path functions <= {MAX_FN_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
