"""The package's shape, checked from its source and by running it: what may import torch, who may import what.

The start-up budgets (docs/performance.md, measured by benchmarks/startup.py) rest on these rules, so they are
tested here as structure, not as timings: a front-end path runs with torch and transformers made
unimportable; only the local model code imports them at import time; no import cycles; front ends use only
`dotocr.engine`'s public names.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dotocr
from tests.cli_helpers import REPO, TINY, free_port, text_image, warm_server

HEAVY = ("torch", "transformers")
MODEL_CODE = {"dotocr.engine.model.modeling_dots_ocr", "dotocr.engine.model.configuration_dots",
              "dotocr.engine.decoders.torch_decoder", "dotocr.engine.model.vector_linear"}
"""The local model code: the only modules allowed to import torch or transformers when imported."""
MODEL_CODE_PREFIXES = ("dotocr.engine.decoders.llamacpp", "dotocr.engine.decoders.gguf", "dotocr.engine.gguf")
"""The llama.cpp decoder and the GGUF writer: they wrap model libraries of their own (llama.cpp, gguf)."""
FRONT_ENDS = ("dotocr.cli", "dotocr.server", "dotocr.tray", "dotocr.capture")

# Makes torch and transformers unimportable in a child process: `import torch` raises ImportError there.
BLOCK_HEAVY = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in HEAVY)


# -- the source, read with the AST -------------------------------------------------------------------------

def all_modules() -> dict[str, Path]:
    """Every module of the dotocr package, by dotted name, with its file."""
    found = {"dotocr": Path(dotocr.__file__)}
    for info in pkgutil.walk_packages(dotocr.__path__, "dotocr."):
        spec = info.module_finder.find_spec(info.name, None)  # type: ignore[call-arg]
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    return found


MODULES = all_modules()


def is_model_code(name: str) -> bool:
    return name in MODEL_CODE or name.startswith(MODEL_CODE_PREFIXES)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, *, at_import_time: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for each import statement in `module`.

    `at_import_time`: only those that run when `module` is imported (module level, including inside module-level
    `if`, `try`, `with` and loops, but not under `if TYPE_CHECKING` nor inside functions). Otherwise every import
    anywhere, functions and `TYPE_CHECKING` blocks included: a lazy import is still an arrow between modules.
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, list[str]]] = []

    def take(node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((_absolute(module, node, is_package), [alias.name for alias in node.names]))

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            take(node)
            if isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                visit(node.body)

    if at_import_time:
        visit(tree.body)
    else:
        for node in ast.walk(tree):
            take(node)
    return found


def top_level_imports(module: str) -> list[tuple[str, list[str]]]:
    return imports_of(module, at_import_time=True)


def dotocr_targets(module: str, *, at_import_time: bool = True) -> set[str]:
    """The dotocr modules that `module` imports directly (a package's `__init__` included)."""
    targets: set[str] = set()
    for imported, names in imports_of(module, at_import_time=at_import_time):
        if imported != "dotocr" and not imported.startswith("dotocr."):
            continue
        # The module itself; its parent packages are imported first too, but a submodule importing its own
        # package's siblings is no cycle, and each package's `__init__` is a node with its own edges.
        if imported in MODULES:
            targets.add(imported)
        for name in names:  # `from dotocr.engine import loading` imports a submodule
            if f"{imported}.{name}" in MODULES:
                targets.add(f"{imported}.{name}")
    targets.discard(module)
    return targets


def import_graph(*, at_import_time: bool = True) -> dict[str, set[str]]:
    return {module: dotocr_targets(module, at_import_time=at_import_time) for module in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph`, as the list of modules around it, or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def walk(node: str) -> list[str] | None:
        if node in visiting:
            return visiting[visiting.index(node):] + [node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph[node]):
            cycle = walk(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = walk(start)
        if cycle:
            return cycle
    return None


# -- the helpers checked on small made-up graphs, so a broken checker cannot pass everything ----------------

def test_every_source_folder_is_a_package():
    """A folder without `__init__.py` is a namespace package, which setuptools' `find` leaves out of the wheel."""
    root = Path(dotocr.__file__).parent
    folders = {p.parent for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(root)) for f in folders if not (f / "__init__.py").exists()) == []
    assert set(MODULES) >= {"dotocr.engine.decoders.base", "dotocr.engine.decoders.torch_decoder"}


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": set(), "b": {"b2"}, "b2": {"b"}}) == ["b", "b2", "b"]


def test_the_import_reader_sees_module_level_imports_at_import_time_and_every_import_otherwise():
    imports = dict(top_level_imports("dotocr.engine.plan"))
    assert "dotocr.config" in imports and "dotocr.errors" in imports  # `from ..config import ...`
    assert "torch" not in imports  # imported inside functions only
    assert "torch" in dict(imports_of("dotocr.engine.plan", at_import_time=False))
    assert "torch" in dict(top_level_imports("dotocr.engine.model.modeling_dots_ocr"))
    assert "dotocr.engine.status" in dotocr_targets("dotocr.engine")
    # the local engine is imported lazily by the face, so only the full reading sees that arrow
    assert "dotocr.engine.inference" not in dotocr_targets("dotocr.engine")
    assert "dotocr.engine.inference" in dotocr_targets("dotocr.engine", at_import_time=False)


def test_the_layer_checker_finds_arrows_back_up():
    layers = (("a.",), ("b",), ("c.",))
    assert upward_arrows({"a.x": {"a.y"}, "a.y": set(), "b": {"a.y"}, "c.z": {"a.x", "b"}}, layers) == []
    assert upward_arrows({"a.x": {"c.z"}, "b": set(), "c.z": set()}, layers) == ["a.x -> c.z"]
    assert upward_arrows({"d": set()}, layers) == ["d has no layer"]


# -- (b) torch and transformers only in the local model code -----------------------------------------------

def heavy_reach(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """For each module, the chain of top-level imports by which importing it imports torch or transformers."""
    direct = {m: [i for i, _ in top_level_imports(m) if i.split(".")[0] in HEAVY] for m in MODULES}
    chains: dict[str, list[str]] = {}

    def chain(module: str, seen: frozenset[str]) -> list[str] | None:
        if direct[module]:
            return [module, direct[module][0]]
        for target in sorted(graph[module] - seen):
            found = chain(target, seen | {target})
            if found:
                return [module, *found]
        return None

    for module in MODULES:
        found = chain(module, frozenset({module}))
        if found:
            chains[module] = found
    return chains


def test_only_the_model_code_imports_torch_or_transformers_at_import_time():
    chains = heavy_reach(import_graph())
    offenders = {m: " -> ".join(c) for m, c in chains.items() if not is_model_code(m)}
    assert offenders == {}
    # the allow-list is real: the model code does import them, so this test would see a stray import
    assert set(chains) >= MODEL_CODE


@pytest.mark.timeout(120)
def test_every_other_module_imports_with_torch_and_transformers_unimportable():
    """The AST test above cannot see a third-party package that imports torch itself (bitsandbytes and
    accelerate do): so import every module but the model code for real, with torch blocked."""
    names = sorted(m for m in MODULES if not is_model_code(m) and not m.endswith("__main__"))
    script = BLOCK_HEAVY + textwrap.dedent(f"""
        import importlib, traceback
        failed = []
        for name in {names!r}:
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.append(name + ": " + traceback.format_exception_only(exc)[-1].strip())
        print("\\n".join(failed))
    """)
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


# -- (c) no import cycles and no arrow back up, imports inside functions included --------------------------

LAYERS = (
    ("dotocr", "dotocr.errors", "dotocr.version", "dotocr.vision_grid", "dotocr.loopback", "dotocr.storage"),
    ("dotocr.config", "dotocr.local_secret"),
    ("dotocr.engine.model.spellings", "dotocr.engine.status", "dotocr.engine.results",
     "dotocr.engine.llamacpp_runtime"),
    ("dotocr.engine.inputs.", "dotocr.engine.model."),
    ("dotocr.engine.answers.",),
    ("dotocr.engine.decoders.", "dotocr.engine.gguf.", "dotocr.engine.plan", "dotocr.engine.checkpoint"),
    ("dotocr.engine.loading", "dotocr.engine.base"),
    ("dotocr.engine.inference", "dotocr.engine.remote"),
    ("dotocr.engine",),
    ("dotocr.desktop.", "dotocr.capture."),
    ("dotocr.cli.", "dotocr.server."),
    ("dotocr.tray.",),
    ("dotocr.__main__",),
)
"""The package from the bottom up: settings -> engine (its wings, then the two engines, then its face) -> desktop
services and capture -> front ends. A name ending in "." is a package and everything in it; a module may import
its own layer and the ones below, never one above."""


def layer_of(module: str, layers: tuple[tuple[str, ...], ...]) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, names in enumerate(layers):
        for name in names:
            matches = module == name.rstrip(".") or (name.endswith(".") and module.startswith(name))
            if matches and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def upward_arrows(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    found = []
    for module in sorted(graph):
        here = layer_of(module, layers)
        if here is None:
            found.append(f"{module} has no layer")
            continue
        found += [f"{module} -> {t}" for t in sorted(graph[module]) if (layer_of(t, layers) or 0) > here]
    return found


def test_no_import_cycles():
    assert find_cycle(import_graph(at_import_time=False)) is None


def test_no_import_goes_back_up_a_layer():
    assert upward_arrows(import_graph(at_import_time=False), LAYERS) == []


# -- (d) front ends see the engine's public face only -------------------------------------------------------

def test_front_ends_use_only_the_engine_packages_public_names():
    import dotocr.engine

    public = set(dotocr.engine.__all__)
    wrong = []
    for module in MODULES:
        if not module.startswith(FRONT_ENDS):
            continue
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # every import, in functions too: a lazy one still reaches in
            if isinstance(node, ast.Import):
                wrong += [f"{module}: import {a.name}" for a in node.names if a.name.startswith("dotocr.engine.")]
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, node, MODULES[module].name == "__init__.py")
                if target.startswith("dotocr.engine."):
                    wrong.append(f"{module}: from {target} import ...")
                elif target == "dotocr.engine":
                    wrong += [f"{module}: {a.name} is not public" for a in node.names if a.name not in public]
    assert wrong == []


# -- (a) front-end paths run with torch and transformers unimportable ---------------------------------------

def run_python(code: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
               block_heavy: bool = True) -> subprocess.CompletedProcess:
    """`python -c CODE` from the checkout, with torch and transformers blocked unless told otherwise."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO))
    full_env.update(env or {})
    prefix = BLOCK_HEAVY if block_heavy else ""
    return subprocess.run([sys.executable, "-c", prefix + code, *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


def run_entry(entry: str, *args: str, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess:
    """A console script's `main(argv)` with torch and transformers unimportable; its exit status returned."""
    module, function = entry.split(":")
    code = f"import sys\nfrom {module} import {function}\nsys.exit({function}(sys.argv[1:]))"
    return run_python(code, *args, env=env, timeout=timeout)


def test_the_blocker_really_blocks():
    done = run_python("import torch")
    assert done.returncode != 0 and "ModuleNotFoundError: import of torch halted" in done.stderr


@pytest.mark.parametrize("module", ["dotocr.cli", "dotocr.server", "dotocr.tray.app", "dotocr.engine",
                                    "dotocr.config"])
def test_front_end_packages_import_without_torch(module):
    done = run_python(f"import {module}")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("entry", ["dotocr.cli:main", "dotocr.server.main:main", "dotocr.tray.app:main"])
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_need_no_torch_nor_the_web_framework(entry, flag):
    web = "".join(f"sys.modules[{name!r}] = None\n" for name in ("fastapi", "uvicorn", "starlette.applications"))
    done = run_python(web + f"from {entry.split(':')[0]} import main\nsys.exit(main(sys.argv[1:]))", flag)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout if flag == "--help" else dotocr.__version__ in done.stdout


def test_a_file_that_is_not_an_image_is_refused_without_torch(tmp_path):
    """Refused before any model loads: with torch unimportable, loading one would fail with another message."""
    notes = tmp_path / "notes.png"
    notes.write_text("not an image at all", encoding="utf-8")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    done = run_entry("dotocr.cli:main", "ocr", str(notes), str(empty), "--model", str(TINY), "--local")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("dotocr: ") for line in lines), done.stderr
    assert str(notes) in lines[0] and str(empty) in lines[1] and "Traceback" not in done.stderr


@pytest.mark.timeout(300)
def test_ocr_against_a_warm_server_needs_no_torch(tmp_path):
    port = free_port()
    settings = tmp_path / "settings.toml"
    settings.write_text(f"api_port = {port}\n", encoding="utf-8")
    env = {"DOTOCR_CONFIG": str(settings)}
    with warm_server(port, tmp_path / "server.log", env):  # the server itself loads the model: torch allowed
        image = text_image(tmp_path / "small.png", (120, 40))
        done = run_entry("dotocr.cli:main", "ocr", str(image), "--format", "json", "--model", str(TINY),
                         "--max-new-tokens", "4", env=env)
    assert done.returncode == 0, done.stderr
    assert '"device": "remote cpu"' in done.stdout
    assert "using the dotocr server" in done.stderr
