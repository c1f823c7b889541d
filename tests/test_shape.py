"""The shape of the code, kept as it grows (issue "A lean engine again", item 6): no function over
40 lines, no class over 200, in the server.

A length is the span from the ``def``/``class`` line to its last line, docstring and comments
included. Exempt: ``build_parser`` and data tables (a function in which one literal spans more than
60 % of its lines), the rule of the project's size tool.
"""

import ast

import pytest

from conftest import ROOT

FUNCTION_LIMIT, CLASS_LIMIT, TABLE_SHARE = 40, 200, 0.60
LITERALS = (ast.Dict, ast.List, ast.Tuple, ast.Set)
CHECKED = ["ocpp_mock_server.py"]


def _span(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1


def _is_table(node: ast.AST) -> bool:
    doc = ast.get_docstring(node, clean=False)
    largest = 0
    for child in ast.walk(node):
        text = isinstance(child, ast.Constant) and isinstance(child.value, str)
        if isinstance(child, LITERALS) or (text and child.value != doc):
            largest = max(largest, _span(child))
    return largest > TABLE_SHARE * _span(node)


def _too_long(path: str) -> list:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _span(node) > CLASS_LIMIT:
            found.append(f"{path}:{node.lineno}: class {node.name} is {_span(node)} lines")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if _span(node) > FUNCTION_LIMIT and node.name != "build_parser" and not _is_table(node):
                found.append(f"{path}:{node.lineno}: function {node.name} is {_span(node)} lines")
    return found


@pytest.mark.parametrize("path", CHECKED)
def test_no_function_over_40_lines_and_no_class_over_200(path):
    assert _too_long(path) == []


def test_the_rule_finds_a_long_function(tmp_path, monkeypatch):
    body = "\n".join(f"    x{number} = {number}" for number in range(45))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n", encoding="utf-8")
    monkeypatch.setattr("test_shape.ROOT", tmp_path)
    assert _too_long("long.py") == ["long.py:1: function long is 46 lines"]


# Issue "OCPP 2.0.1 on the same engine", item 2: the version is data.  Only the tables name a
# version; no code compares a version (or a dialect of one) to decide what to do.
VERSION_TEXTS = {"1.6", "2.0.1", "ocpp1.6", "ocpp2.0.1", "ocpp2.0"}
VERSION_NAMES = {"OCPP16", "OCPP201", "RPC_16", "RPC_201", "DIALECT_OCPP16", "DIALECT_OCPP201"}
TABLE_LINES = ("DIALECT_OCPP16 =", "DIALECT_OCPP201 =", "RPC_16 =", "RPC_201 =", '"2.0.1", "ocpp')


def _names_a_version(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in VERSION_TEXTS
    return isinstance(node, ast.Name) and node.id in VERSION_NAMES


@pytest.mark.slow(2)
def test_no_code_branches_on_the_ocpp_version():
    source = (ROOT / "ocpp_mock_server.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
                _names_a_version(operand) for operand in [node.left, *node.comparators]):
            found.append(f"{node.lineno}: a comparison with a version: {lines[node.lineno - 1]}")
        elif isinstance(node, ast.Constant) and node.value in VERSION_TEXTS:
            line = lines[node.lineno - 1]
            if not any(table in line for table in TABLE_LINES):
                found.append(f"{node.lineno}: a version literal outside the tables: {line}")
    assert found == []
