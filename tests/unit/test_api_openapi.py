"""The OpenAPI document matches the code: every falcon route of the app built from
route_modules() is documented with exactly the methods it implements, and the document is a
valid OpenAPI 3.1 document whose references and path parameters are consistent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gitserver import config as config_mod
from gitserver.api import openapi
from gitserver.api.app import create_app, route_modules
from gitserver.runtime import Runtime


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build_document(route_modules())


@pytest.fixture
def routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    config = config_mod.load(environ={"GITSERVER_DATA_DIR": str(tmp_path)})
    runtime = Runtime.create(config)
    try:
        return openapi.app_routes(create_app(runtime))
    finally:
        runtime.dispose()


def documented_methods(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {path: {m for m in item if m in openapi.HTTP_METHODS} for path, item in doc["paths"].items()}


def test_every_route_is_documented_with_its_methods(document: dict[str, Any], routes: dict[str, set[str]]) -> None:
    documented = documented_methods(document)
    undocumented = {p: sorted(m - documented.get(p, set())) for p, m in routes.items()
                    if m - documented.get(p, set())}
    assert not undocumented, f"routes missing from the OpenAPI document: {undocumented}"


def test_every_documented_operation_exists(document: dict[str, Any], routes: dict[str, set[str]]) -> None:
    phantom = {p: sorted(m - routes.get(p, set())) for p, m in documented_methods(document).items()
               if m - routes.get(p, set())}
    assert not phantom, f"documented but not served: {phantom}"


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    import schemathesis.openapi

    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in document["paths"].values()
           for method, op in item.items() if method in openapi.HTTP_METHODS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"dangling reference {ref}"
            node = node[part]


def test_path_parameters_are_declared(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        in_template = set(re.findall(r"\{(\w+)\}", path))
        for method, op in item.items():
            if method not in openapi.HTTP_METHODS:
                continue
            declared = {p["name"] for p in [*item.get("parameters", []), *op.get("parameters", [])]
                        if p.get("in") == "path"}
            assert declared == in_template, f"{method.upper()} {path}: declares {declared}"


def test_error_responses_use_the_error_schema(document: dict[str, Any]) -> None:
    for name, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, name


def test_conflicting_descriptions_are_refused() -> None:
    import types

    modules = []
    for name, summary in (("_oa_test_a", "one"), ("_oa_test_b", "two")):
        module = types.ModuleType(name)
        module.OPENAPI_PATHS = {"/x": {"get": {"summary": summary, "responses": {}}}}  # type: ignore[attr-defined]
        modules.append(module)
    with pytest.raises(openapi.DocumentError, match="GET /x is described by both _oa_test_a and _oa_test_b"):
        openapi.build_document(modules)


@pytest.mark.parametrize(("template", "path"), [("/a/{id:int}", "/a/{id}"),
                                                ("/a/{id:int(min=1, max=9)}/b/{n}", "/a/{id}/b/{n}")])
def test_falcon_converters_are_stripped(template: str, path: str) -> None:
    assert openapi.openapi_path(template) == path
