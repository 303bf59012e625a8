"""The one direction of imports (docs/architecture.md): a module may import its own layer and the layers
below it, never one above. Every import counts, also one inside a function (a lazy import is still a
dependency). There is no list of exceptions: a function that seems to need an import from above
belongs in a lower layer."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "clinalign"

#: lowest first. ``base`` is clinalign/__init__.py, errors.py, config.py (YAML + overrides) and progress.py; hashing.py counts as models; ``cli`` is clinalign/cli.py,
#: __main__.py and every package's cli.py (the command surface sits above everything it calls).
LAYERS = ["base", "tasks", "synthetic", "data", "models", "train", "eval", "rate", "report", "export", "study", "cli"]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[-1] in ("cli", "__main__"):
        return "cli"
    if len(parts) == 1 or parts[1] in ("errors", "config", "progress", "__version__"):
        return "base"
    return {"hashing": "models"}.get(parts[1], parts[1])  # content hashes of model weights


def imports(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported clinalign module, line) for every import statement anywhere in the source."""
    out = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from clinalign.x import y` may name the module clinalign.x.y: count the more specific one
            out += [(f"{base}.{a.name}" if base.count(".") < 2 else base, node.lineno) for a in node.names]
    return [(m, line) for m, line in dict.fromkeys(out) if m == "clinalign" or m.startswith("clinalign.")]


def violations(files: dict[str, str]) -> list[str]:
    """Imports from a lower layer into a higher one."""
    bad = []
    for name, source in files.items():
        path = Path(name)
        module = module_name(path, SRC)
        src_layer = layer(module)
        assert src_layer in LAYERS, f"{name}: layer {src_layer!r} is not in LAYERS (place it in the order)"
        for target, line in imports(source, module, path.name == "__init__.py"):
            dst_layer = layer(target)
            assert dst_layer in LAYERS, f"{name}:{line}: imports {target}, whose layer is not in LAYERS"
            if LAYERS.index(dst_layer) > LAYERS.index(src_layer):
                bad.append(f"{name}:{line}: {module} ({src_layer}) imports {target} ({dst_layer}), a higher layer")
    return bad


def test_imports_go_one_way():
    files = {str(p): p.read_text(encoding="utf-8") for p in sorted(SRC.rglob("*.py"))}
    assert len(files) > 50
    bad = violations(files)
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_relative_and_module_imports():
    tasks = str(SRC / "tasks" / "x.py")
    bad = violations({tasks: "def f():\n    from clinalign.study import runner\n"})
    assert bad == [f"{tasks}:2: clinalign.tasks.x (tasks) imports clinalign.study.runner (study), a higher layer"]
    bad = violations({str(SRC / "data" / "y.py"): "import clinalign.report.tables\nfrom ..rate import db\n"})
    assert len(bad) == 2 and "clinalign.rate.db (rate)" in bad[1]
    assert violations({str(SRC / "study" / "z.py"): "from clinalign.report import write_report\n"}) == []
    assert violations({str(SRC / "models" / "cli.py"): "from clinalign.eval.predict import x\n"}) == []
    assert violations({str(SRC / "eval" / "w.py"): "from clinalign.data.cli import app\n"})  # cli is on top
