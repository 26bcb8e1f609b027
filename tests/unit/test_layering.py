"""search/ and scorers/ stay free of the server's stack; search/ never reaches into scorers/;
the server never imports the benchmarks."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_STACK = {"vllm", "fastapi", "redis", "pydantic", "server", "starlette", "torch"}


def imported_top_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package, forbidden", [
    ("search", SERVER_STACK | {"scorers"}),
    ("scorers", SERVER_STACK),
    ("server", {"bench", "tests"}),
])
def test_imports(package, forbidden):
    files = sorted((ROOT / package).glob("*.py"))
    assert files
    for path in files:
        assert not imported_top_packages(path) & forbidden, path
