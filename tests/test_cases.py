"""The shared test cases (tests/cases.py) are what the modules using them assume, and no test module imports
another test module (shared helpers go to a helper module such as tests/cases.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from npr.layout import build_layout
from tests.cases import THREE_AND_TWO, TWO_BRANCHES, prompt_ids

TESTS = Path(__file__).resolve().parent
# Test modules that still import another test module; each is the lead's to move onto tests/cases.py.
KNOWN: set[str] = set()


def test_layout_cases_are_valid_with_their_prompt_lengths(sym, tags):
    two = build_layout(sym(TWO_BRANCHES), tags, response_start=3)
    three = build_layout(sym(THREE_AND_TWO), tags, response_start=1)
    assert two.is_valid and three.is_valid, (two.error, three.error)
    assert (two.num_forks, three.num_forks) == (1, 2)
    assert sorted(set(three.branch_id.tolist())) == [0, 1, 2, 3]


def test_prompt_ids_is_the_chat_prompt(tokenizer):
    ids = prompt_ids(tokenizer)
    assert ids and all(isinstance(i, int) for i in ids)
    assert "What is 6 times 7?" in tokenizer.decode(ids)
    assert prompt_ids(tokenizer, "Add 2 and 3.") != ids


def imported_test_modules(path: Path) -> set[str]:
    """The `tests.*.test_*` modules a file imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) \
            else []
        found.update(n for n in names if n.startswith("tests.") and n.rsplit(".", 1)[-1].startswith("test_"))
    return found


def test_no_test_module_imports_another():
    offenders = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        name = ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)
        imported = imported_test_modules(path)
        if imported and name not in KNOWN:
            offenders[name] = sorted(imported)
    assert not offenders, f"test modules importing other test modules (move the shared helper to tests/cases.py): " \
                          f"{offenders}"


def test_the_check_sees_an_import_of_a_test_module(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("from tests.npr.test_layout import X\ndef f():\n    import tests.forkjoin.test_contract\n"
                   "from tests.cases import prompt_ids\n")
    assert imported_test_modules(bad) == {"tests.npr.test_layout", "tests.forkjoin.test_contract"}
