#!/usr/bin/env python3
"""include-graph.py — the include graph of lib/, drawn from the #include lines.

Writes docs/include-graph.dot (files, clustered by folder, and the folder-level edges)
and, when Graphviz's `dot` is installed, renders docs/include-graph.svg. Exits 1 and
names the cycle when the folders of lib/ include each other in a cycle: layers call
down only (docs/architecture.md).

    scripts/include-graph.py            check, write the .dot (and the .svg with dot)
    scripts/include-graph.py --check    check only
    scripts/include-graph.py --symbols build
                                        also check the calls: which folder's objects use
                                        symbols another folder's objects define (nm), since
                                        lib/internal.h declares functions of several layers
                                        and an #include of it shows no direction
"""
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INC = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def node_of(path):
    """The folder a file belongs to: lib/<folder>, `lib` for lib/*.h, `public` for include/."""
    rel = os.path.relpath(path, ROOT)
    parts = rel.split(os.sep)
    if parts[0] == "include":
        return "public"
    if parts[0] == "lib" and len(parts) == 2:
        return "lib"
    return parts[1]


def resolve(src, name):
    for base in (os.path.dirname(src), os.path.join(ROOT, "lib"), os.path.join(ROOT, "include")):
        p = os.path.normpath(os.path.join(base, name))
        if os.path.exists(p):
            return p
    return None  # a third-party header (llhttp.h): not ours


def files():
    for top in ("lib", "include"):
        for d, _, names in os.walk(os.path.join(ROOT, top)):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    yield os.path.join(d, n)


def symbol_edges(build):
    """Folder -> folder edges from nm: a folder uses a symbol another one defines."""
    defined, used = {}, {}
    libdir = os.path.join(build, "lib")
    for d, _, names in os.walk(libdir):
        for n in names:
            if not n.endswith(".o"):
                continue
            src = os.path.join(ROOT, "lib", os.path.relpath(d, libdir), n[:-2] + ".c")
            if not os.path.exists(src):
                continue  # left behind by a file that moved
            folder = os.path.relpath(d, libdir).split(os.sep)[0]
            out = subprocess.run(["nm", os.path.join(d, n)], capture_output=True, text=True,
                                 check=True).stdout
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == "U":
                    used.setdefault(folder, set()).add(parts[1])
                elif len(parts) == 3 and parts[1] in "TDBRC":
                    defined[parts[2]] = folder
    edges = {}
    for folder, syms in used.items():
        for sym in syms:
            owner = defined.get(sym)
            if owner is not None and owner != folder:
                edges.setdefault((folder, owner), []).append(sym)
    return edges


def main():
    check_only = "--check" in sys.argv[1:]
    if "--symbols" in sys.argv[1:]:
        build = sys.argv[sys.argv.index("--symbols") + 1]
        sedges = symbol_edges(os.path.join(ROOT, build))
        graph = {}
        for (a, b) in sedges:
            graph.setdefault(a, set()).add(b)
        cycle = find_cycle(graph)
        if cycle:
            print("call graph: the folders of lib/ call each other in a cycle: "
                  + " -> ".join(cycle), file=sys.stderr)
            for a, b in zip(cycle, cycle[1:]):
                print(f"  {a} -> {b}: {', '.join(sorted(sedges[(a, b)])[:5])}",
                      file=sys.stderr)
            return 1
        print(f"call graph: no cycle between lib/ folders ({len(sedges)} folder edges); "
              f"lowest first: {' < '.join(topo(graph))}")
    edges, folder_edges = set(), {}
    for f in files():
        with open(f, encoding="utf-8") as fh:
            for name in INC.findall(fh.read()):
                t = resolve(f, name)
                if t is None or t == f:
                    continue
                edges.add((f, t))
                a, b = node_of(f), node_of(t)
                if a != b:
                    folder_edges.setdefault((a, b), []).append(
                        (os.path.relpath(f, ROOT), os.path.relpath(t, ROOT)))
    # cycles between folders (lib and public are shared headers, below every layer)
    graph = {}
    for (a, b) in folder_edges:
        graph.setdefault(a, set()).add(b)
    cycle = find_cycle(graph)
    if not check_only:
        write_dot(edges, folder_edges)
    if cycle:
        print("include graph: the folders of lib/ include each other in a cycle: "
              + " -> ".join(cycle), file=sys.stderr)
        for a, b in zip(cycle, cycle[1:]):
            f, t = folder_edges[(a, b)][0]
            print(f"  {a} -> {b}: {f} includes {t}", file=sys.stderr)
        return 1
    order = " < ".join(topo(graph))
    print(f"include graph: no cycle between lib/ folders ({len(edges)} includes); "
          f"lowest first: {order}")
    return 0


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def topo(graph):
    nodes = set(graph) | {m for v in graph.values() for m in v}
    done, out = set(), []

    def visit(n):
        if n in done:
            return
        done.add(n)
        for m in sorted(graph.get(n, ())):
            visit(m)
        out.append(n)

    for n in sorted(nodes):
        visit(n)
    return out


def write_dot(edges, folder_edges):
    by_folder = {}
    for f, t in edges:
        for p in (f, t):
            by_folder.setdefault(node_of(p), set()).add(p)
    lines = ["// generated by scripts/include-graph.py from the #include lines of lib/ and include/",
             "digraph includes {", "  rankdir=BT; compound=true; node [shape=box, fontsize=10];"]
    for i, (folder, ps) in enumerate(sorted(by_folder.items())):
        lines.append(f'  subgraph cluster_{i} {{ label="{folder}"; style=rounded;')
        for p in sorted(ps):
            lines.append(f'    "{os.path.relpath(p, ROOT)}";')
        lines.append("  }")
    for f, t in sorted(edges):
        lines.append(f'  "{os.path.relpath(f, ROOT)}" -> "{os.path.relpath(t, ROOT)}";')
    lines.append("}")
    dot_path = os.path.join(ROOT, "docs", "include-graph.dot")
    with open(dot_path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    # the folder-level picture: what docs/architecture.md shows
    flines = ["// generated by scripts/include-graph.py: lib/ folders, an edge per folder that includes another",
              "digraph layers {", "  rankdir=BT; node [shape=box, style=rounded];"]
    for (a, b), why in sorted(folder_edges.items()):
        flines.append(f'  "{a}" -> "{b}" [label="{len(why)}"];')
    flines.append("}")
    fdot = os.path.join(ROOT, "docs", "layers.dot")
    with open(fdot, "w", encoding="utf-8") as fh:
        fh.write("\n".join(flines) + "\n")
    if shutil.which("dot"):
        for src, out in ((dot_path, "include-graph.svg"), (fdot, "layers.svg")):
            subprocess.run(["dot", "-Tsvg", src, "-o", os.path.join(ROOT, "docs", out)],
                           check=True)


if __name__ == "__main__":
    sys.exit(main())
