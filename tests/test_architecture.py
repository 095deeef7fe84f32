"""The shape of the package: stages that import in one direction, SQL only in the store,
and a command line that starts without the heavy libraries.

The import graph is read from the source with ``ast``, imports inside functions included,
so an import moved into a function to dodge a cycle is still a cycle here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "mailer"
# Libraries that take tens of milliseconds each to import.
HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "jinja2", "mjml", "premailer", "apscheduler")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in PACKAGE.rglob("*.py")
        if "migrations" not in p.parts  # Alembic loads these itself
    }


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The mailer modules ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    names = set(known)
    return {name: imports_of(path, name, names) for name, path in known.items()}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            # A package's __init__ re-exporting its own modules is not a cycle of flow.
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_there_is_no_import_cycle() -> None:
    assert _cycle(graph()) is None, f"import cycle: {' -> '.join(_cycle(graph()) or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_never_imports_the_command_line() -> None:
    offenders = {
        name: sorted(i for i in imported if i.startswith("mailer.cli"))
        for name, imported in graph().items()
        if not name.startswith("mailer.cli") and name != "mailer.__main__"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_sql_outside_the_store() -> None:
    offenders = []
    for name, path in modules().items():
        if name.startswith("mailer.store"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []  # type-only imports are not queries
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                if any(m.split(".")[0] in ("sqlalchemy", "sqlmodel", "sqlite3") for m in mods):
                    offenders.append(f"{name}: imports {mods[0]}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = node.value.upper().split()
                if words[:1] in (["SELECT"], ["UPDATE"], ["INSERT"], ["DELETE"]) and any(
                    w in words for w in ("FROM", "SET", "INTO", "WHERE")
                ):
                    offenders.append(f"{name}: SQL text {node.value[:40]!r}")
    assert offenders == []


def _imported_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_help_and_version_load_no_heavy_library() -> None:
    loaded = _imported_by(
        "from mailer.cli import app\n"
        "for args in (['--help'], ['--version'], ['send', '--help']):\n"
        "    try:\n"
        "        app(args, prog_name='mailer')\n"
        "    except SystemExit:\n"
        "        pass"
    )
    assert "mailer" in loaded
    assert sorted(set(HEAVY) & loaded) == []


def test_listing_lists_loads_only_the_database_layer(newsletter: Path) -> None:
    loaded = _imported_by(
        "import os\n"
        f"os.chdir({str(newsletter)!r})\n"
        "from mailer.store.database import open_db\n"
        "from mailer import config\n"
        "open_db(config.load()).close()  # the schema exists, as after any earlier command\n"
        "for m in [m for m in __import__('sys').modules if m.startswith(('alembic',))]:\n"
        "    del __import__('sys').modules[m]\n"
        "from mailer.cli import app\n"
        "try:\n"
        "    app(['lists', 'list'], prog_name='mailer')\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert "sqlalchemy" in loaded
    assert sorted({"jinja2", "mjml", "premailer", "apscheduler"} & loaded) == []


# -- one definition per fact ------------------------------------------------------------------

# The one writer of a person's status, and the one module that spells who may be mailed.
STATUS_WRITER = "mailer.store.status"
ELIGIBILITY = "mailer.store.eligibility"
# Objects whose ``status`` is not a person's: a membership, a schedule, a send...
OTHER_STATUS_OWNERS = {"membership", "item", "schedule", "send", "delivery", "request"}


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in modules().items()}


def status_writes(tree: ast.Module, in_store: bool = True) -> list[str]:
    """Where ``tree`` writes a person's status: an assignment to ``X.status`` (X not one of
    the other owners of a status), a Core ``.values(status=...)`` on the subscriber table,
    SQL text that updates it, or in the store (where every query is) a ``status=`` keyword
    or ``"status"`` key given a ``SubscriberStatus`` (a row written by a query)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and not (
                        isinstance(target.value, ast.Name)
                        and target.value.id in OTHER_STATUS_OWNERS
                    )
                ):
                    found.append(f"line {node.lineno}: {ast.unparse(node)[:60]}")
        pairs: list[tuple[str | None, ast.expr]] = []
        if isinstance(node, ast.Call):
            pairs = [(k.arg, k.value) for k in node.keywords]
            if (
                isinstance(node.func, ast.Attribute)
                and node.func.attr in ("values", "ordered_values")
                and "subscriber" in ast.unparse(node.func.value)
                and any(k == "status" for k, _ in pairs)
            ):
                found.append(f"line {node.lineno}: {ast.unparse(node)[:60]}")
                continue
        elif isinstance(node, ast.Dict):
            pairs = [
                (k.value if isinstance(k, ast.Constant) and isinstance(k.value, str) else None, v)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            ]
        for key, value in pairs if in_store else ():
            if key == "status" and "SubscriberStatus" in ast.unparse(value):
                found.append(f"line {value.lineno}: status={ast.unparse(value)[:40]}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = " ".join(node.value.lower().split())
            if "update subscriber set" in text and "status" in text:
                found.append(f"line {node.lineno}: SQL text {node.value[:40]!r}")
    return found


def eligibility_spellings(tree: ast.Module) -> list[str]:
    """Where ``tree`` spells the heart of who may be mailed, a filter to active people: a
    query's ``== SubscriberStatus.ACTIVE`` (on a column: ``col(...)``, ``X.c.status``,
    ``Model.status``), or SQL text that compares a status with 'active'. (Which lists a
    person is subscribed to is asked in many places, for their pages: not the rule.)"""
    found: list[str] = []
    rule = ("SubscriberStatus.ACTIVE",)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and all(isinstance(o, ast.Eq) for o in node.ops):
            sides = [ast.unparse(n) for n in (node.left, *node.comparators)]
            if any(s.startswith(rule) for s in sides) and any(
                s.startswith("col(") or ".c." in s or s.split(".")[0][:1].isupper()
                for s in sides
                if not s.startswith(rule)
            ):
                found.append(f"line {node.lineno}: {ast.unparse(node)[:60]}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = " ".join(node.value.lower().split())
            if "status = 'active'" in text or "status='active'" in text:
                found.append(f"line {node.lineno}: SQL text {node.value[:40]!r}")
    return found


def test_only_the_status_module_writes_a_person_s_status() -> None:
    offenders = {
        name: found
        for name, tree in _trees().items()
        if name != STATUS_WRITER and (found := status_writes(tree, name.startswith("mailer.store")))
    }
    assert offenders == {}


def test_only_the_eligibility_module_spells_who_may_be_mailed() -> None:
    offenders = {
        name: found
        for name, tree in _trees().items()
        if name not in (ELIGIBILITY, STATUS_WRITER) and (found := eligibility_spellings(tree))
    }
    assert offenders == {}


def test_the_checks_of_one_definition_find_what_they_look_for() -> None:
    writes = ast.parse(
        "who.status = SubscriberStatus.ACTIVE\n"
        "membership.status = MembershipStatus.SUBSCRIBED\n"
        "conn.execute(sa.update(_subscriber).values(status=new))\n"
        "rows.append({'status': SubscriberStatus.BOUNCED})\n"
        "cursor.execute(\"UPDATE subscriber SET status = 'bounced'\")\n"
    )
    assert sorted(w.split(":")[0] for w in status_writes(writes)) == [
        "line 1",
        "line 3",
        "line 4",
        "line 5",
    ]
    spelled = ast.parse(
        "q.where(col(S.status) == SubscriberStatus.ACTIVE)\n"
        "q.where(s.c.status == SubscriberStatus.ACTIVE)\n"
        "q.where(Subscriber.status == SubscriberStatus.ACTIVE)\n"
        "if who.status == SubscriberStatus.ACTIVE: pass\n"
        "SQL = \"SELECT 1 FROM subscriber s WHERE s.status = 'active'\"\n"
    )
    assert sorted(w.split(":")[0] for w in eligibility_spellings(spelled)) == [
        "line 1",
        "line 2",
        "line 3",
        "line 5",
    ]


def test_one_busy_retry_loop() -> None:
    """Only mailer.store.connections.retry_while_busy asks whether the database was busy."""
    callers = {
        name
        for name, tree in _trees().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("is_busy")
    }
    assert callers == {"mailer.store.connections"}


# The command line's modules are named after their command groups (`mailer bounces` is
# cli/bounces.py), so they may share a name with the library module that does the work.
NAMED_AFTER_A_COMMAND = "mailer.cli."


def test_no_two_classes_share_a_name() -> None:
    """So a reader never has to ask which ``Sender`` this is."""
    where: dict[str, list[str]] = {}
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(name)
    assert {k: v for k, v in where.items() if len(v) > 1} == {}


def test_no_two_modules_share_a_file_name() -> None:
    where: dict[str, list[str]] = {}
    for name, path in modules().items():
        if path.name != "__init__.py" and not name.startswith(NAMED_AFTER_A_COMMAND):
            where.setdefault(path.name, []).append(name)
    assert {k: v for k, v in where.items() if len(v) > 1} == {}


ROUTE_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "api_route"}


def nested_routes(tree: ast.Module) -> list[str]:
    """Functions with a route decorator (``@x.get(...)``) that are not at the top of their
    module: a route must be a module-level function that gets what it needs (the site, the
    editor) from a FastAPI dependency, not from a closure."""
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or id(node) in top:
            continue
        for decorator in node.decorator_list:
            call = decorator.func if isinstance(decorator, ast.Call) else decorator
            if isinstance(call, ast.Attribute) and call.attr in ROUTE_METHODS:
                found.append(f"{node.name} (line {node.lineno})")
    return found


def test_web_routes_are_module_level_functions() -> None:
    trees = _trees()
    nested = {
        name: found
        for name, tree in trees.items()
        if name.startswith("mailer.web") and (found := nested_routes(tree))
    }
    assert nested == {}
    closure = ast.parse(
        "def router(site):\n    api = APIRouter()\n\n"
        "    @api.post('/x')\n    def x():\n        return site\n"
    )
    assert nested_routes(closure) == ["x (line 5)"]


# -- layers: folders in one order -------------------------------------------------------------

ARCHITECTURE = REPO / "docs" / "architecture.md"
# The first column of the layers table names this for the modules at the package's top level
# (config.py, errors.py, urls.py ...), the lowest layer, which every folder may import.
TOP = "mailer/*.py"


def declared_layers() -> list[tuple[str, set[str] | None]]:
    """The layers table of docs/architecture.md, lowest first: each layer's name (a folder,
    or ``TOP``) and the folders it says the layer imports (``None`` for "everything below")."""
    layers: list[tuple[str, set[str] | None]] = []
    rows = ARCHITECTURE.read_text(encoding="utf-8").split("\n| layer |", 1)[1].split("\n\n")[0]
    for row in rows.splitlines()[2:]:
        first, _owns, imports = (cell.strip() for cell in row.strip().strip("|").split(" | "))
        name = first.strip("`").removesuffix("/")
        reads = (
            None
            if "everything" in imports
            else {word.split(".")[0].strip("/") for word in imports.split("`")[1::2]}
        )
        layers.append((name, reads))
    return layers


def layer_of(module: str) -> str:
    """``mailer.sending.engine`` -> ``sending``; a top-level module -> ``TOP``. ``python -m
    mailer`` (``__main__``) only starts the command line, so it counts as ``cli``."""
    parts = module.split(".")
    if module == "mailer.__main__":
        return "cli"
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return TOP


def upward_imports(edges: dict[str, set[str]], order: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(
        f"{module} ({layer_of(module)}/) imports {target} ({layer_of(target)}/), a layer above it"
        for module, targets in edges.items()
        for target in targets
        if rank[layer_of(target)] > rank[layer_of(module)]
    )


def test_every_folder_has_one_place_in_the_declared_order() -> None:
    order = [name for name, _ in declared_layers()]
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert order[0] == TOP
    assert len(order) == len(set(order)), f"a layer named twice in {ARCHITECTURE.name}: {order}"
    assert sorted(folders - set(order)) == [], f"folders missing from {ARCHITECTURE.name}'s layers"
    assert sorted(set(order) - folders - {TOP}) == [], f"layers in {ARCHITECTURE.name}, no folder"


def test_no_folder_imports_a_layer_above_it() -> None:
    """Imports inside functions and under TYPE_CHECKING count: each points down the order."""
    found = upward_imports(graph(), [name for name, _ in declared_layers()])
    assert found == [], "\n".join(found)


def test_each_layer_imports_only_what_the_table_says() -> None:
    """The table's third column lists what a layer may import: only layers below it, and
    every one it does import (besides the top-level modules, which all may import)."""
    layers = declared_layers()
    order = [name for name, _ in layers]
    used: dict[str, set[str]] = {name: set() for name in order}
    for module, targets in graph().items():
        used[layer_of(module)] |= {layer_of(t) for t in targets} - {layer_of(module), TOP}
    wrong = {
        name: f"lists {sorted(reads - set(order[: order.index(name)]))}, not below it"
        for name, reads in layers
        if reads is not None and not reads <= set(order[: order.index(name)])
    }
    unlisted = {
        name: f"imports {sorted(used[name] - reads)}, not listed"
        for name, reads in layers
        if reads is not None and not used[name] <= reads
    }
    problems = [
        f"{name}/ {what} in {ARCHITECTURE.name}" for name, what in (wrong | unlisted).items()
    ]
    assert problems == [], "\n".join(problems)


def test_the_layer_check_finds_an_import_pointing_up() -> None:
    edges = {"mailer.render.compile": {"mailer.urls", "mailer.site.build"}}
    assert upward_imports(edges, [TOP, "render", "site"]) == [
        "mailer.render.compile (render/) imports mailer.site.build (site/), a layer above it"
    ]
    assert upward_imports(edges, [TOP, "site", "render"]) == []


# -- what the engine may ask of the database ----------------------------------------------------

ENGINE = "mailer.sending"
# The one store module the engine imports: every operation a send needs, typed.
STORE_FOR_SENDING = "mailer.store.for_sending"
DIALECT_WORDS = ("dialect", "sqlite", "postgres", "psycopg")


def test_the_engine_asks_the_database_only_through_its_store_module() -> None:
    found = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module == ENGINE or module.startswith(ENGINE + ".")
        for target in targets
        # "mailer.store" itself is only the package the import names (a docstring).
        if target.startswith("mailer.store.") and target != STORE_FOR_SENDING
    )
    assert found == [], "\n".join(found)


def dialect_mentions(tree: ast.Module) -> list[str]:
    """Names, attributes and strings of ``tree`` that ask which database runs: ``dialect``,
    ``sqlite``, ``postgres``, ``psycopg`` (docstrings, which may say why, are left out)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words = node.id
        elif isinstance(node, ast.Attribute):
            words = node.attr
        elif isinstance(node, ast.alias):
            words = node.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = "" if id(node) in docstrings else node.value
        else:
            continue
        if any(word in words.lower() for word in DIALECT_WORDS):
            found.append(f"line {getattr(node, 'lineno', '?')}: {words[:40]}")
    return found


def test_the_engine_never_asks_which_database_it_runs_on() -> None:
    offenders = {
        name: found
        for name, tree in _trees().items()
        if (name == ENGINE or name.startswith(ENGINE + ".")) and (found := dialect_mentions(tree))
    }
    assert offenders == {}


def test_the_dialect_check_finds_a_question_about_the_database() -> None:
    tree = ast.parse(
        '"""Faster on SQLite."""\n'
        "if conn.dialect.name == 'postgresql':\n"
        "    pass\n"
        "import sqlite3\n"
    )
    assert sorted(f.split(":")[0] for f in dialect_mentions(tree)) == ["line 2", "line 2", "line 4"]
