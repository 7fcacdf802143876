#!/usr/bin/env python3
"""The code's shape at a git revision, for models/ features/ pipeline/ dags/: lines per
module, the longest functions, and the counts of functions taking more than 6 parameters
and of functions returning a bare ``dict`` (annotated ``-> dict``):
    python scripts/code-size.py REV [--all-modules]"""
import ast
import json
import subprocess
import sys
from pathlib import Path

rev = sys.argv[1]
repo = str(Path(__file__).resolve().parents[1])
files = [f for f in subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", rev], capture_output=True, text=True).stdout.split()
         if f.endswith(".py") and f.split("/")[0] in ("models", "features", "pipeline", "dags")]
loc, funcs, many_params, bare_dicts = {}, [], [], []
for f in files:
    src = subprocess.run(["git", "-C", repo, "show", f"{rev}:{f}"], capture_output=True, text=True).stdout
    loc[f] = src.count("\n")
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{f}:{node.name}"
            funcs.append((node.end_lineno - node.lineno + 1, name))
            args = node.args
            count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
            count -= 1 if args.args and args.args[0].arg in ("self", "cls") else 0
            if count > 6:
                many_params.append((count, name))
            if isinstance(node.returns, ast.Name) and node.returns.id == "dict":
                bare_dicts.append(name)
funcs.sort(reverse=True)
print(json.dumps({"modules": len(loc), "total_lines": sum(loc.values()), "functions": len(funcs),
                  "lines_per_module": dict(sorted(loc.items(), key=lambda kv: -kv[1])) if "--all-modules" in sys.argv
                  else sorted(loc.items(), key=lambda kv: -kv[1])[:10],
                  "longest_functions": funcs[:10], "functions_over_60_lines": sum(1 for n, _ in funcs if n > 60),
                  "functions_over_6_params": len(many_params), "most_params": sorted(many_params, reverse=True)[:10],
                  "functions_returning_bare_dict": len(bare_dicts)}, indent=1))
