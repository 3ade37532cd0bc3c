"""Response bodies have one source (gitserver.jsonshape's Shapes): the document's response schemas
are the Shapes the handlers render with, a Shape renders exactly its declared fields, and the
JSON every REST operation answers for real rows validates against the schema its document
promises."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema_rs
import pytest

from gitserver import shapes
from gitserver.admin import tokens
from gitserver.api import errors, openapi
from gitserver.api.openapi import ref as oa_ref
from gitserver.cmd.wiring import api_app, route_modules
from gitserver.db import models
from gitserver.db.refrule_models import KEY_GPG, SigningKey
from gitserver.db.session import transaction
from gitserver.jsonshape import INTEGER, STRING, Out, Shape, nested
from gitserver.pipelines import deliverylog
from gitserver.repour import answers
from tests.unit.conftest import make_runtime

REST = re.compile(r"^/api/v1/")
# Operations that change something, run once the GETs have seen the rows as they were.
POSTS = ("cancelPipeline", "redeliverDelivery", "redeliverTenantDelivery", "runMaintenance")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build_document(route_modules())


def shapes_of(module: ModuleType) -> list[Shape]:
    return [value for value in vars(module).values() if isinstance(value, Shape)]


def declaring_modules() -> tuple[ModuleType, ...]:
    """The route modules and the modules below them that declare the shapes they answer with."""
    return (*route_modules(), shapes, deliverylog, answers, errors, openapi)


# --- the declaration ------------------------------------------------------------------------------

def test_every_shape_of_a_route_module_is_its_schema_in_the_document(document: dict[str, Any]) -> None:
    found = [shape for module in declaring_modules() for shape in shapes_of(module)]
    assert len(found) >= 25
    schemas = document["components"]["schemas"]
    for shape in found:
        referenced = shape.ref()["$ref"] in str(document)
        if referenced or shape.name in schemas:
            assert schemas[shape.name] == shape.schema(), shape.name


def test_a_shape_renders_exactly_its_fields() -> None:
    shape = Shape("Sample", {"id": Out(INTEGER), "label": Out(STRING, attr="name"),
                             "upper": Out(STRING, value=lambda row: row.name.upper()),
                             "url": Out(STRING, given=True), "size": Out(INTEGER, given=True, required=False)})

    class Row:
        id, name = 7, "seven"

    assert shape.render(Row(), url="u") == {"id": 7, "label": "seven", "upper": "SEVEN", "url": "u"}
    assert shape.render(Row(), url="u", size=3)["size"] == 3
    with pytest.raises(TypeError, match=r"Sample\.url must be given"):
        shape.render(Row())
    with pytest.raises(TypeError, match="Sample has no given field extra"):
        shape.render(Row(), url="u", extra=1)
    assert shape.schema() == {"type": "object", "required": ["id", "label", "upper", "url"],
                              "properties": {"id": INTEGER, "label": STRING, "upper": STRING, "url": STRING,
                                             "size": INTEGER}}


def test_a_nested_shape_renders_from_the_row_or_as_given() -> None:
    inner = Shape("Inner", {"method": Out(STRING, attr="request_method")})
    outer = Shape("Outer", {"request": nested(inner, "what was sent"), "later": nested(inner, given=True)})

    class Row:
        request_method = "POST"

    assert outer.render(Row(), later={"method": "GET"}) == {"request": {"method": "POST"}, "later": {"method": "GET"}}
    assert outer.schema()["properties"]["request"] == {**inner.schema(), "description": "what was sent"}


def test_of_refuses_values_built_elsewhere_with_another_key() -> None:
    shape = Shape("Built", {"a": Out(INTEGER, given=True)})
    assert shape.of({"a": 1}) == {"a": 1}
    with pytest.raises(TypeError):
        shape.of({"a": 1, "b": 2})
    with pytest.raises(TypeError):
        shape.of({})


# --- what the handlers answer ---------------------------------------------------------------------

def public_key(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def seed_rows(session: Any, repo_id: int, user_id: int, hooks: tuple[int, int]) -> dict[str, str]:
    """A push with a pipeline, a step and an archive, and a delivery of each webhook with an
    attempt: what only a push or a worker would otherwise make."""
    now = dt.datetime.now(dt.UTC)
    push = models.Push(repo_id=repo_id, user_id=user_id, key_fingerprint="SHA256:x", client_address="127.0.0.1",
                       cert_ca_fingerprint="SHA256:ca", cert_key_id="alice@corp", cert_serial=str(2**64 - 1),
                       push_options='["ci.skip"]')
    session.add(push)
    session.flush()
    session.add(models.RefUpdate(push_id=push.id, ref="refs/heads/main", old="0" * 40, new="a" * 40, rules="rs-1",
                                 signatures='[{"commit": "' + "a" * 40 + '", "result": "signed", "signer": "u"}]'))
    pipeline = models.Pipeline(repo_id=repo_id, push_id=push.id, ref="refs/heads/main", commit="a" * 40,
                               status=models.RUNNING, started_at=now)
    session.add(pipeline)
    session.flush()
    session.add(models.Step(pipeline_id=pipeline.id, position=1, name="archive", status=models.SUCCEEDED,
                            exit_code=0, started_at=now, finished_at=now))
    session.add(models.Archive(repo_id=repo_id, tree_id="b" * 40, tag="repour-" + "c" * 40, commit_id="c" * 40,
                               source_commit="a" * 40, source_ref="refs/heads/main", pipeline_id=pipeline.id))
    deliveries = []
    for number, webhook_id in enumerate(hooks):
        delivery = models.Delivery(webhook_id=webhook_id, pipeline_id=pipeline.id, guid=f"guid-{number}",
                                   event="push", url="https://93.184.216.34/hook", payload='{"a": 1}',
                                   status="failed", attempts=1, response_status=500, error="boom")
        session.add(delivery)
        session.flush()
        session.add(models.DeliveryAttempt(
            delivery_id=delivery.id, number=1, started_at=now, duration_ms=5, request_url=delivery.url,
            request_method="POST", request_headers='{"X-A": "1"}', request_body_sha256="d" * 64,
            response_status=500, response_headers='{"X-B": "2"}', outcome="failed", error="boom"))
        deliveries.append(delivery.id)
    session.flush()
    return {"pipeline_id": str(pipeline.id), "delivery_id": str(deliveries[0]),
            "tenant_delivery_id": str(deliveries[1])}


def _attested_commit(runtime: Any) -> str:
    """A commit of t/r with its attestations note, as a push leaves them."""
    import pygit2

    from gitserver.provenance import attest, keys, reflog, signer
    from gitserver.provenance.entry import Entry

    keys.ensure_key(runtime.config.signing_dir)
    key = signer.from_config(runtime.config)
    path = runtime.store.path("t", "r")
    repo = pygit2.Repository(str(path))
    who = pygit2.Signature("a", "a@example.com", 1_700_000_000, 0)
    commit = str(repo.create_commit("refs/heads/main", who, who, "m\n", repo.TreeBuilder().write(), []))
    [logged] = reflog.append(path, key, [Entry("refs/heads/main", "0" * 40, commit, push_id=1, protocol="ssh")])
    assert attest.attest(path, key, [logged], "http://x/git/t/r.git", "http://x") == 2
    return commit


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app on a fresh SQLite database, with one of every object the REST API shows, made
    through the API where it can make them; and the path parameters naming them."""
    from falcon import testing

    runtime = make_runtime(f"sqlite:///{tmp_path / 'test.db'}", tmp_path / "data")
    with transaction(runtime.sessions) as session:
        secret = tokens.create_token(session, site_admin=True, name="shapes-test")[1]
    api = testing.TestClient(api_app(runtime), headers={"Authorization": f"Bearer {secret}"})
    made: dict[str, Any] = {}
    base = "/api/v1/tenants/t"
    for name, path, body in (
            ("tenant", "/api/v1/tenants", {"name": "t"}), ("user", f"{base}/users", {"name": "u"}),
            ("key", f"{base}/users/u/keys", {"key": public_key(tmp_path, "k1")}),
            ("batch", f"{base}/users/u/keys/batch", {"keys": [public_key(tmp_path, "k2"), "nonsense"],
                                                     "skip_refused": True}),
            ("token", f"{base}/users/u/tokens", {"name": "n"}), ("group", f"{base}/groups", {"name": "g"}),
            ("repo", f"{base}/repos", {"name": "r"}),
            ("deploy_key", f"{base}/repos/r/deploy-keys", {"key": public_key(tmp_path, "k3")}),
            ("webhook", f"{base}/repos/r/webhooks", {"url": "https://93.184.216.34/hook", "secret": "s"}),
            ("tenant_webhook", f"{base}/webhooks", {"url": "https://93.184.216.34/hook"}),
            ("ssh_ca", f"{base}/ssh-cas", {"key": public_key(tmp_path, "ca")}),
            ("principal", f"{base}/users/u/principals", {"principal": "u@corp"})):
        resp = api.simulate_post(path, json=body)
        assert resp.status_code == 201, (path, resp.text)
        made[name] = resp
    made["revocation"] = api.simulate_post(f"{base}/ssh-cas/{made['ssh_ca'].json['id']}/revoked",
                                           json={"serial": 7})
    for path in (f"{base}/groups/g/members/u", f"{base}/repos/r/grants/users/u", f"{base}/repos/r/grants/groups/g"):
        assert api.simulate_put(path, json={} if "members" in path else {"permission": "read"}).status_code < 300
    # Protected references (docs/ref-rules.md): a rule list on each owner, a signing-only key.
    for path in (f"{base}/rules", f"{base}/repos/r/rules"):
        assert api.simulate_put(path, json=[{"pattern": "refs/heads/*", "linear": True}]).status_code == 200
    signing_key = api.simulate_post(f"{base}/users/u/signing-keys", json={"key": public_key(tmp_path, "k4")})
    assert signing_key.status_code == 201, signing_key.text
    assert api.simulate_patch(f"{base}/users/u", json={"emails": ["u@example.org"]}).status_code == 200
    with transaction(runtime.sessions) as session:
        rows = seed_rows(session, made["repo"].json["id"], made["user"].json["id"],
                         (made["webhook"].json["id"], made["tenant_webhook"].json["id"]))
        # A GPG key row as stored (registering one needs gpg; its rendering does not).
        gpg = SigningKey(tenant_id=made["tenant"].json["id"], user_id=made["user"].json["id"], kind=KEY_GPG,
                         fingerprint="A" * 40, key_data="-----BEGIN PGP PUBLIC KEY BLOCK-----\n…", title="")
        session.add(gpg)
        session.flush()
        rows["gpg_key_id"] = str(gpg.id)
    rows["signing_key_id"] = str(signing_key.json["id"])
    rows["rule_set"] = api.simulate_get(f"{base}/repos/r/rules").json["id"]
    rows["commit"] = _attested_commit(runtime)
    params = {"tenant": "t", "user": "u", "group": "g", "repo": "r", **rows,
              "key_id": str(made["key"].json["id"]), "token_id": str(made["token"].json["id"]),
              "deploy_key_id": str(made["deploy_key"].json["id"]),
              "webhook_id": str(made["webhook"].json["id"]),
              "tenant_webhook_id": str(made["tenant_webhook"].json["id"]),
              "ca_id": str(made["ssh_ca"].json["id"]), "principal": "u@corp"}
    try:
        yield api, {**params, "made": made}  # type: ignore[dict-item]
    finally:
        runtime.dispose()


def response_schema(document: dict[str, Any], operation: dict[str, Any], status: int) -> dict[str, Any]:
    content = operation["responses"][str(status)].get("content", {})
    return content.get("application/json", {}).get("schema", {})


def closed(schema: Any) -> Any:
    """``schema`` with every object that lists its properties closed to others: the document
    leaves response objects open (clients must tolerate new fields), but a handler that sends
    a field its shape does not declare is a bug this test must catch."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def check(document: dict[str, Any], schema: dict[str, Any], body: Any, what: str) -> None:
    validator = jsonschema_rs.Draft202012Validator(closed({**schema, "components": document["components"]}))
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, f"{what} answers JSON its schema refuses: {errors[:5]}"


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if REST.match(path) and method in openapi.HTTP_METHODS:
                yield method, path, operation


def test_every_answer_validates_against_its_documented_schema(
        document: dict[str, Any], client: tuple[Any, dict[str, Any]]) -> None:
    api, params = client
    made = params.pop("made")
    create_ops = {"createTenant": "tenant", "createUser": "user", "addKey": "key", "importKeys": "batch",
                  "createToken": "token", "createGroup": "group", "createRepository": "repo",
                  "addDeployKey": "deploy_key", "createWebhook": "webhook", "createTenantWebhook": "tenant_webhook",
                  "addSshCa": "ssh_ca", "addSshPrincipal": "principal", "revokeSshCertificates": "revocation"}
    validated: set[str] = set()
    todo = sorted(operations(document), key=lambda op: op[2]["operationId"] in POSTS)
    for method, path, operation in todo:
        op_id = operation["operationId"]
        if op_id in create_ops:
            resp = made[create_ops[op_id]]
        elif method == "get" or op_id in POSTS:
            own = params if "/repos/" in path else {**params, "webhook_id": params["tenant_webhook_id"],
                                                    "delivery_id": params["tenant_delivery_id"]}
            url = re.sub(r"\{(\w+)\}", lambda m, own=own: own[m.group(1)], path)
            resp = api.simulate_request(method.upper(), url)
        else:
            continue
        assert resp.status_code < 300, (op_id, resp.status_code, resp.text)
        schema = response_schema(document, operation, resp.status_code)
        if resp.headers.get("content-type", "").startswith("application/json"):
            assert schema, f"{op_id} answers JSON its document does not describe"
            check(document, schema, resp.json, op_id)
            validated.add(op_id)
    expected = {op["operationId"] for method, _path, op in operations(document)
                if any(response_schema(document, op, int(code)) for code in op["responses"] if code.startswith("2"))
                and (method == "get" or op["operationId"] in POSTS or op["operationId"] in create_ops)}
    assert expected <= validated, sorted(expected - validated)
    assert len(validated) >= 30


def test_an_undeclared_or_missing_field_fails_the_check(document: dict[str, Any]) -> None:
    user = {"id": 1, "tenant": "t", "name": "u", "role": "member", "disabled": False,
            "created_at": "2026-01-01T00:00:00+00:00"}
    check(document, shapes.USER.ref(), user, "a user")
    with pytest.raises(AssertionError, match="extra"):
        check(document, shapes.USER.ref(), {**user, "extra": 1}, "a user with a field too many")
    with pytest.raises(AssertionError, match="role"):
        check(document, shapes.USER.ref(), {k: v for k, v in user.items() if k != "role"}, "a user without role")


def test_every_field_of_a_documented_object_is_required_unless_declared_optional(document: dict[str, Any]) -> None:
    # Only a Shape's Out(required=False) fields (size_bytes, measured only for one object) may
    # be absent: a client reading the document can count on every other field.
    optional = {(shape.name, name) for module in declaring_modules() for shape in shapes_of(module)
                for name, out in shape.fields.items() if not out.required}
    for name, schema in document["components"]["schemas"].items():
        if schema.get("type") != "object" or "properties" not in schema or schema.get("additionalProperties") is False:
            continue  # request bodies (closed, with their own optional fields) and pages
        missing = {(name, field) for field in schema["properties"]} - {(name, f) for f in schema["required"]}
        assert missing <= optional, sorted(missing - optional)


def test_error_answers_validate_against_the_error_schema(
        document: dict[str, Any], client: tuple[Any, dict[str, Any]]) -> None:
    api, _params = client
    answers = {404: api.simulate_get("/api/v1/tenants/t/repos/missing"),
               400: api.simulate_post("/api/v1/tenants/t/repos", json={"name": "x", "visibilty": "public"}),
               409: api.simulate_post("/api/v1/tenants/t/repos", json={"name": "r"})}
    operation = document["paths"]["/api/v1/tenants/{tenant}/repos"]["post"]
    for status, resp in answers.items():
        assert resp.status_code == status, resp.text
        assert str(status) in operation["responses"], f"{status} is not documented"
        check(document, oa_ref("Error"), resp.json, f"a {status} answer")
