"""The OpenAPI document matches the code: every falcon route of the app built from
route_modules() is documented with exactly the methods it implements, the document is a
valid OpenAPI 3.1 document whose references and path parameters are consistent, and every
request body in it is generated from the Fields its handler validates with."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gitserver import config as config_mod
from gitserver.admin import tokens
from gitserver.api import body as body_mod
from gitserver.api import openapi
from gitserver.api.body import Field, field_schema, json_schema
from gitserver.api.paging import OPENAPI_PARAMETERS
from gitserver.cmd.wiring import api_app, route_modules
from gitserver.console import security
from gitserver.db.session import transaction, upgrade
from gitserver.jsonshape import INTEGER, Out, Shape
from gitserver.runtime import Runtime


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build_document(route_modules())


@pytest.fixture
def routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    config = config_mod.load(environ={"GITSERVER_DATA_DIR": str(tmp_path)})
    runtime = Runtime.create(config)
    try:
        # The web console's pages (/ui/) are HTML for people, not API: not in the document.
        return {p: m for p, m in openapi.app_routes(api_app(runtime)).items()
                if not security.is_console(p)}
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


def test_create_and_list_operations_are_the_operations_they_stand_for() -> None:
    thing = Shape("Thing", {"id": Out(INTEGER)})
    created = {201: ("Added; Location names it", {"$ref": "#/components/schemas/Thing"})}
    assert openapi.create_op("addThing", "Add a thing", "things", thing, "NewThing", done="Added") == openapi.op(
        "addThing", "Add a thing", "things", created, errors=(400, 401, 403, 404, 409),
        body=openapi.json_body(openapi.ref("NewThing")))
    listed = openapi.list_op("listThings", "Things", "things", "things", thing, errors=(400, 401))
    assert listed["responses"]["200"] == {"description": "A page of things",
                                          "content": openapi.json_content(openapi.ref("ThingList"))}
    assert listed["parameters"] == OPENAPI_PARAMETERS
    assert set(listed["responses"]) == {"200", "400", "401"}


@pytest.mark.parametrize(("template", "path"), [("/a/{id:int}", "/a/{id}"),
                                                ("/a/{id:int(min=1, max=9)}/b/{n}", "/a/{id}/b/{n}")])
def test_falcon_converters_are_stripped(template: str, path: str) -> None:
    assert openapi.openapi_path(template) == path


# --- request bodies: one source (the Fields) for the handler and the document --------------------

def _request_bodies() -> dict[str, dict[str, Any]]:
    """Each route module's ``REQUEST_BODIES``: schema name → the schema its Fields make
    (Repour's schemas hold theirs in ``.fields``; a body that is not an object, such as the
    rule list's array, is one Field)."""
    found: dict[str, dict[str, Any]] = {}
    for module in route_modules():
        for name, fields in getattr(module, "REQUEST_BODIES", {}).items():
            if isinstance(fields, Field) and fields.fields is None:
                found[name] = field_schema(fields)
            else:
                found[name] = json_schema(getattr(fields, "fields", fields))
    return found


def _body_operations(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path, schema name) of every documented operation with a JSON request body."""
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}) if method in openapi.HTTP_METHODS else {}
            if "application/json" in content:  # (smart HTTP's bodies are git's protocol)
                ref = content["application/json"]["schema"]["$ref"]
                out.append((method, path, ref.rsplit("/", 1)[1]))
    return out


def _without_description(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "description"}


def test_every_documented_request_body_is_generated_from_fields(document: dict[str, Any]) -> None:
    bodies = _request_bodies()
    operations = _body_operations(document)
    assert len(operations) >= 20
    for method, path, name in operations:
        assert name in bodies, f"{method.upper()} {path}: its body {name} is not declared as Fields"
        assert _without_description(document["components"]["schemas"][name]) == bodies[name]


@pytest.fixture
def admin_app(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app on a fresh SQLite database, a site admin's token, and one of each object a body
    endpoint's path names (made through the API itself)."""
    from falcon import testing

    url = f"sqlite:///{tmp_path / 'test.db'}"
    upgrade(url)
    runtime = Runtime.create(config_mod.load(environ={}, data_dir=str(tmp_path / "data"), database_url=url))
    with transaction(runtime.sessions) as session:
        _, secret = tokens.create_token(session, site_admin=True, name="openapi-test")
    client = testing.TestClient(api_app(runtime), headers={"Authorization": f"Bearer {secret}"})
    made = {}
    for path, body in (("/api/v1/tenants", {"name": "t"}), ("/api/v1/tenants/t/users", {"name": "u"}),
                       ("/api/v1/tenants/t/groups", {"name": "g"}), ("/api/v1/tenants/t/repos", {"name": "r"}),
                       ("/api/v1/tenants/t/repos/r/webhooks", {"url": "https://93.184.216.34/hook"}),
                       ("/api/v1/tenants/t/webhooks", {"url": "https://93.184.216.34/hook"}),
                       ("/api/v1/tenants/t/ssh-cas", {"key": _ca_key()})):
        resp = client.simulate_post(path, json=body)
        assert resp.status_code == 201, (path, resp.text)
        made[path] = resp.json
    # A webhook's id in the path of its owner: the repository's, else the tenant's.
    params = {"tenant": "t", "user": "u", "group": "g", "repo": "r", "task_id": "x",
              "webhook_id": str(made["/api/v1/tenants/t/repos/r/webhooks"]["id"]),
              "tenant_webhook_id": str(made["/api/v1/tenants/t/webhooks"]["id"]),
              "ca_id": str(made["/api/v1/tenants/t/ssh-cas"]["id"]), "principal": "p"}
    try:
        yield client, params
    finally:
        runtime.dispose()


def _ca_key() -> str:
    import asyncssh

    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def _fill(path: str, params: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)


def test_every_handler_validates_with_the_fields_its_document_shows(
        document: dict[str, Any], admin_app: tuple[Any, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each documented body's handler is sent ``{}``; the Fields it checks that body against
    (the first object checked in the request) describe exactly the documented schema."""
    client, params = admin_app
    seen: list[Mapping[str, Field]] = []
    checker = body_mod.object_problems

    def recording(data: Any, fields: Mapping[str, Field], *args: Any, **kwargs: Any) -> Any:
        seen.append(fields)
        return checker(data, fields, *args, **kwargs)

    monkeypatch.setattr(body_mod, "object_problems", recording)
    for method, path, name in _body_operations(document):
        seen.clear()
        url = _fill(path, params if "/repos/" in path else {**params, "webhook_id": params["tenant_webhook_id"]})
        schema = document["components"]["schemas"][name]
        # An array body (the rule list) is sent one empty object: its items' Fields check it.
        is_array = schema.get("type") == "array"
        resp = client.simulate_request(method.upper(), url, json=[{}] if is_array else {})
        assert seen, f"{method.upper()} {path} answered {resp.status_code} without checking its body"
        assert json_schema(seen[0]) == _without_description(schema["items"] if is_array else schema), \
            f"{method.upper()} {path} validates with other Fields than its documented {name}"
