#!/usr/bin/env python3
"""Lines per module and the longest functions of models/ features/ pipeline/ dags/ at a git revision:
    python scripts/code-size.py REV"""
import ast, subprocess, sys, json
rev = sys.argv[1]
repo = str(__import__("pathlib").Path(__file__).resolve().parents[1])
files = [f for f in subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", rev], capture_output=True, text=True).stdout.split()
         if f.endswith(".py") and f.split("/")[0] in ("models", "features", "pipeline", "dags")]
loc, funcs = {}, []
for f in files:
    src = subprocess.run(["git", "-C", repo, "show", f"{rev}:{f}"], capture_output=True, text=True).stdout
    loc[f] = src.count("\n")
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs.append((node.end_lineno - node.lineno + 1, f"{f}:{node.name}"))
funcs.sort(reverse=True)
print(json.dumps({"modules": len(loc), "total_lines": sum(loc.values()), "largest": sorted(loc.items(), key=lambda kv: -kv[1])[:8],
                  "longest_functions": funcs[:8], "functions_over_60_lines": sum(1 for n, _ in funcs if n > 60)}, indent=1))
