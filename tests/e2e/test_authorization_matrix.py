"""Who may call which endpoint: one row per endpoint, one column per caller.

Every cell is the status that the real services must return. Path ids belong
to the "user" caller, so "other" is a second user who does not own them.
The stack runs in development mode, where the /v1/dev routes are mounted and
take no credential, so every caller gets 200 there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

from services.launcher import SERVICES
from tests.conftest import RunContext, make_person
from tests.e2e.authorization import (
    PNG,
    SETTING_KEY,
    Build,
    Column,
    Request,
    World,
    build_world,
    fresh_attribute,
    fresh_own_pat,
    fresh_session,
    fresh_user_token,
    introspection_form,
    new_attribute_body,
    new_token_body,
    new_user_body,
    own_picture,
    own_signature,
    password_change,
    plain,
    png_body,
    sign_in_body,
    users_picture,
    users_signature,
    with_json,
)

# The order of the columns in every row's ``expected``.
COLUMNS = (
    Column("anonymous"),
    Column("collaborator", "collaborator", session=True),
    Column("user", "user", session=True),
    Column("other user", "other", session=True),
    Column("administrator", "administrator", session=True),
    # The collaborator's token was made while they were a user.
    Column("collaborator PAT", "collaborator", pat="collaborator"),
    Column("user PAT", "user", pat="user"),
    Column("other user PAT", "other", pat="other"),
    Column("administrator PAT", "administrator", pat="administrator"),
    Column("expired PAT", "user", pat="expired"),
    Column("deleted PAT", "user", pat="deleted"),
    Column("deactivated user PAT", pat="deactivated"),
    Column("PAT while pat_enabled is No", "user", pat="user", switched_off=True),
)

NOT_IN_MATRIX = {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}


@dataclass(frozen=True)
class Row:
    service: str
    method: str
    path: str
    expected: tuple[int, ...]
    build: Build = plain

    @property
    def endpoint(self) -> tuple[str, str, str]:
        return (self.service, self.method, self.path)


# Columns, left to right: anonymous, then the sessions of collaborator, user,
# other user and administrator, then the PATs of the same four, then the
# expired, deleted and deactivated user's PATs, then any PAT while
# pat_enabled is No.
# fmt: off
MATRIX = (
    # profile: sessions. A PAT cannot open, read or end a session.
    Row("profile", "POST", "/v1/sessions",
        (201, 201, 201, 201, 201, 403, 403, 403, 403, 403, 403, 403, 403),
        sign_in_body),
    Row("profile", "GET", "/v1/sessions/current",
        (401, 200, 200, 200, 200, 403, 403, 403, 403, 403, 403, 403, 403)),
    Row("profile", "DELETE", "/v1/sessions/current",
        (401, 204, 204, 204, 204, 403, 403, 403, 403, 403, 403, 403, 403),
        fresh_session),
    # profile: the caller's own profile.
    Row("profile", "GET", "/v1/me",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401)),
    Row("profile", "PATCH", "/v1/me",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401),
        with_json({"display_name": "Matrix Caller"})),
    Row("profile", "POST", "/v1/me/password",
        (401, 204, 204, 204, 204, 403, 403, 403, 403, 403, 403, 403, 403),
        password_change),
    Row("profile", "PUT", "/v1/me/attributes/{attribute_id}",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401),
        with_json({"value": "matrix value"})),
    Row("profile", "GET", "/v1/me/picture",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401),
        own_picture),
    Row("profile", "PUT", "/v1/me/picture",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401),
        png_body),
    Row("profile", "DELETE", "/v1/me/picture",
        (401, 204, 204, 204, 204, 401, 204, 204, 204, 401, 401, 401, 401),
        own_picture),
    Row("profile", "GET", "/v1/me/signature",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401),
        own_signature),
    Row("profile", "GET", "/v1/me/signature/image",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401),
        own_signature),
    Row("profile", "PUT", "/v1/me/signature/text",
        (401, 200, 200, 200, 200, 403, 403, 403, 403, 403, 403, 403, 403),
        with_json({"text": "Matrix Caller"})),
    Row("profile", "PUT", "/v1/me/signature/image",
        (401, 200, 200, 200, 200, 403, 403, 403, 403, 403, 403, 403, 403),
        png_body),
    Row("profile", "DELETE", "/v1/me/signature",
        (401, 204, 204, 204, 204, 403, 403, 403, 403, 403, 403, 403, 403),
        own_signature),
    # profile: users, as administrators manage them.
    Row("profile", "GET", "/v1/users",
        (401, 403, 403, 403, 200, 401, 403, 403, 200, 401, 401, 401, 401)),
    Row("profile", "POST", "/v1/users",
        (401, 403, 403, 403, 201, 403, 403, 403, 403, 403, 403, 403, 403),
        new_user_body),
    Row("profile", "GET", "/v1/users/{user_id}",
        (401, 404, 200, 404, 200, 401, 200, 404, 200, 401, 401, 401, 401)),
    Row("profile", "PATCH", "/v1/users/{user_id}",
        (401, 404, 403, 404, 200, 403, 403, 403, 403, 403, 403, 403, 403),
        with_json({"display_name": "Matrix User"})),
    Row("profile", "GET", "/v1/users/{user_id}/attributes",
        (401, 404, 200, 404, 200, 401, 200, 404, 200, 401, 401, 401, 401)),
    Row("profile", "PUT", "/v1/users/{user_id}/attributes/{attribute_id}",
        (401, 404, 200, 404, 200, 403, 403, 403, 403, 403, 403, 403, 403),
        with_json({"value": "matrix value"})),
    # profile: a user's picture, for the user and administrators.
    Row("profile", "GET", "/v1/users/{user_id}/picture",
        (401, 404, 200, 404, 200, 401, 200, 404, 200, 401, 401, 401, 401),
        users_picture),
    Row("profile", "PUT", "/v1/users/{user_id}/picture",
        (401, 404, 200, 404, 200, 403, 403, 403, 403, 403, 403, 403, 403),
        png_body),
    Row("profile", "DELETE", "/v1/users/{user_id}/picture",
        (401, 404, 204, 404, 204, 403, 403, 403, 403, 403, 403, 403, 403),
        users_picture),
    # profile: a user's signature, for that user alone.
    Row("profile", "GET", "/v1/users/{user_id}/signature",
        (401, 404, 200, 404, 404, 401, 200, 404, 404, 401, 401, 401, 401),
        users_signature),
    Row("profile", "GET", "/v1/users/{user_id}/signature/image",
        (401, 404, 200, 404, 404, 401, 200, 404, 404, 401, 401, 401, 401),
        users_signature),
    Row("profile", "PUT", "/v1/users/{user_id}/signature/text",
        (401, 404, 200, 404, 404, 403, 403, 403, 403, 403, 403, 403, 403),
        with_json({"text": "Matrix User"})),
    Row("profile", "PUT", "/v1/users/{user_id}/signature/image",
        (401, 404, 200, 404, 404, 403, 403, 403, 403, 403, 403, 403, 403),
        png_body),
    Row("profile", "DELETE", "/v1/users/{user_id}/signature",
        (401, 404, 204, 404, 404, 403, 403, 403, 403, 403, 403, 403, 403),
        users_signature),
    # profile: contact attribute definitions.
    Row("profile", "GET", "/v1/attributes",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401)),
    Row("profile", "POST", "/v1/attributes",
        (401, 403, 403, 403, 201, 403, 403, 403, 403, 403, 403, 403, 403),
        new_attribute_body),
    Row("profile", "PATCH", "/v1/attributes/{attribute_id}",
        (401, 403, 403, 403, 200, 403, 403, 403, 403, 403, 403, 403, 403),
        with_json({"user_editable": True})),
    Row("profile", "DELETE", "/v1/attributes/{attribute_id}",
        (401, 403, 403, 403, 204, 403, 403, 403, 403, 403, 403, 403, 403),
        fresh_attribute),
    # settings.
    Row("settings", "GET", "/v1/settings",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401)),
    Row("settings", "GET", "/v1/settings/{key}",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401)),
    Row("settings", "PUT", "/v1/settings/{key}",
        (401, 403, 403, 403, 200, 403, 403, 403, 403, 403, 403, 403, 403),
        with_json({"value": 180})),
    Row("settings", "GET", "/v1/settings/{key}/history",
        (401, 403, 403, 403, 200, 401, 403, 403, 200, 401, 401, 401, 401)),
    # tokens: gateways. A session is not a PAT, so forward auth rejects it.
    Row("tokens", "GET", "/v1/auth/forward",
        (401, 401, 401, 401, 401, 403, 200, 200, 200, 401, 401, 403, 403)),
    Row("tokens", "GET", "/v1/auth/validate",
        (401, 401, 401, 401, 401, 403, 200, 200, 200, 401, 401, 403, 403)),
    # Introspection takes a client credential, which no caller here has.
    Row("tokens", "POST", "/v1/auth/introspect",
        (401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401),
        introspection_form),
    # tokens: the caller's own tokens.
    Row("tokens", "GET", "/v1/tokens/feature",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401)),
    Row("tokens", "GET", "/v1/tokens",
        (401, 200, 200, 200, 200, 401, 200, 200, 200, 401, 401, 401, 401)),
    Row("tokens", "POST", "/v1/tokens",
        (401, 403, 201, 201, 201, 403, 403, 403, 403, 403, 403, 403, 403),
        new_token_body),
    # /v1/tokens/self is the PAT of the request, and a session has none.
    Row("tokens", "GET", "/v1/tokens/self",
        (401, 404, 404, 404, 404, 401, 200, 200, 200, 401, 401, 401, 401)),
    Row("tokens", "DELETE", "/v1/tokens/self",
        (401, 404, 404, 404, 404, 401, 204, 204, 204, 401, 401, 401, 401),
        fresh_own_pat),
    Row("tokens", "GET", "/v1/tokens/{token_id}",
        (401, 404, 200, 404, 200, 401, 200, 404, 200, 401, 401, 401, 401)),
    # With a PAT, a caller deletes only that PAT, and the path names another token.
    Row("tokens", "DELETE", "/v1/tokens/{token_id}",
        (401, 404, 204, 404, 204, 401, 403, 403, 403, 401, 401, 401, 401),
        fresh_user_token()),
    Row("tokens", "POST", "/v1/tokens/{token_id}/rotate",
        (401, 404, 200, 404, 404, 403, 403, 403, 403, 403, 403, 403, 403),
        fresh_user_token({"expire_in_days": 30})),
    # tokens: administration.
    Row("tokens", "GET", "/v1/users/{user_id}/tokens",
        (401, 403, 403, 403, 200, 401, 403, 403, 200, 401, 401, 401, 401)),
    Row("tokens", "DELETE", "/v1/users/{user_id}/tokens/{token_id}",
        (401, 403, 403, 403, 204, 403, 403, 403, 403, 403, 403, 403, 403),
        fresh_user_token()),
    # tokens: development routes, which take no credential.
    Row("tokens", "GET", "/v1/dev/clock",
        (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200)),
    Row("tokens", "POST", "/v1/dev/clock/advance",
        (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200),
        with_json({"seconds": 0})),
    Row("tokens", "POST", "/v1/dev/expiry-scan",
        (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200)),
    Row("tokens", "GET", "/v1/dev/validation-cache",
        (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200)),
)
# fmt: on


def served_endpoints(run: RunContext) -> set[tuple[str, str, str]]:
    """Collect every method and path that the running services document."""
    endpoints = set()
    for service in SERVICES:
        document = httpx.get(f"{run.stack.urls[service]}/openapi.json").json()
        for path, operations in document["paths"].items():
            if path in NOT_IN_MATRIX:
                continue
            for method in operations:
                endpoints.add((service, method.upper(), path))
    return endpoints


def test_matrix_rows_well_formed() -> None:
    endpoints = [row.endpoint for row in MATRIX]

    assert len(endpoints) == len(set(endpoints)), "an endpoint has two rows"
    for row in MATRIX:
        assert len(row.expected) == len(COLUMNS), f"{row.endpoint} has wrong width"


def test_every_endpoint_has_a_row(run: RunContext) -> None:
    served = served_endpoints(run)
    rows = {row.endpoint for row in MATRIX}

    assert sorted(served - rows) == [], "endpoints without a row in MATRIX"
    assert sorted(rows - served) == [], "rows in MATRIX for no served endpoint"


@dataclass
class Cell:
    row: Row
    column: Column
    expected: int
    request: Request


def prepare(world: World, row: Row, column: Column, expected: int) -> Cell:
    return Cell(row, column, expected, row.build(world, column))


def send(world: World, cell: Cell) -> str | None:
    """Send one cell's request and describe a wrong status, or return None."""
    params = {
        "user_id": world.user.id,
        "token_id": world.kept_token_id,
        "attribute_id": world.attribute_id,
        "key": SETTING_KEY,
        **cell.request.params,
    }
    path = cell.row.path.format(**params)
    credential = cell.request.credential or cell.column.credential(world)
    kwargs = dict(cell.request.kwargs)
    headers = dict(kwargs.pop("headers", {}))
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    response = world.http.request(
        cell.row.method, world.url(cell.row.service, path), headers=headers, **kwargs
    )
    if cell.request.cleanup is not None:
        cell.request.cleanup(response)
    if response.status_code == cell.expected:
        return None
    # A successful response may contain a session or token value.
    detail = response.text[:200] if response.status_code >= 400 else ""
    return (
        f"{cell.row.method} {cell.row.path} as {cell.column.name}: expected "
        f"{cell.expected}, got {response.status_code} {detail}"
    )


def switch_pats(world: World, enabled: bool) -> None:
    world.run.api.change_setting(world.admin, "pat_enabled", enabled)
    world.run.api.wait_for_feature(world.admin, enabled=enabled)
    # The validation cache drops its entries when its own reader sees the
    # change, which can come a moment after the feature reports it.
    world.wait_for_validation(world.pats["user"], 200 if enabled else 403)


def test_authorization_matrix(run: RunContext, admin: str) -> None:
    world = build_world(run, admin)
    wrong: list[str] = []

    for row in MATRIX:
        for column, expected in zip(COLUMNS, row.expected, strict=True):
            if column.switched_off:
                continue
            failure = send(world, prepare(world, row, column, expected))
            if failure is not None:
                wrong.append(failure)

    # The last column runs with the feature off; its requests are built
    # first, because creating the tokens they use needs the feature on.
    off = [
        (row, column, expected)
        for row in MATRIX
        for column, expected in zip(COLUMNS, row.expected, strict=True)
        if column.switched_off
    ]
    cells = [prepare(world, row, column, expected) for row, column, expected in off]
    switch_pats(world, enabled=False)
    try:
        for cell in cells:
            failure = send(world, cell)
            if failure is not None:
                wrong.append(failure)
    finally:
        switch_pats(world, enabled=True)

    assert wrong == [], "\n".join(wrong)


def probe(
    run: RunContext, credential: str, method: str, service: str, path: str
) -> tuple[int, str]:
    """Return the status and body that ``credential`` gets for one request."""
    body = {"expire_in_days": 5} if path.endswith("/rotate") else None
    response = httpx.request(
        method,
        f"{run.stack.urls[service]}{path}",
        json=body,
        headers={"Authorization": f"Bearer {credential}"},
    )
    return response.status_code, response.text


def test_existence_hidden_from_other_users(run: RunContext, admin: str) -> None:
    owner = make_person(run, admin)
    bare = make_person(run, admin)  # has no picture, signature or token
    other = make_person(run, admin)
    token = run.api.create_token(owner.session, "hidden", 5)
    other_pat = run.api.create_token(other.session, "prober", 5)["token"]
    picture = httpx.put(
        f"{run.stack.urls['profile']}/v1/me/picture",
        content=PNG,
        headers={
            "Authorization": f"Bearer {owner.session}",
            "Content-Type": "application/octet-stream",
        },
    )
    assert picture.status_code == 200
    run.api.request(
        "PUT", "profile", "/v1/me/signature/text", owner.session, json={"text": "O"}
    )
    missing = str(uuid.uuid4())
    token_ids = (token["id"], missing)
    user_ids = (owner.id, bare.id, missing)
    signature_paths = ["/v1/users/{}/signature", "/v1/users/{}/signature/image"]
    probes = [
        ("GET", "tokens", "/v1/tokens/{}", token_ids),
        ("POST", "tokens", "/v1/tokens/{}/rotate", token_ids),
        ("DELETE", "tokens", "/v1/tokens/{}", token_ids),
        ("GET", "profile", "/v1/users/{}/picture", user_ids),
        ("DELETE", "profile", "/v1/users/{}/picture", user_ids),
        *[("GET", "profile", path, user_ids) for path in signature_paths],
        ("DELETE", "profile", "/v1/users/{}/signature", user_ids),
    ]

    for credential in (other.session, other_pat):
        for method, service, path, ids in probes:
            responses = {
                probe(run, credential, method, service, path.format(i)) for i in ids
            }
            assert len(responses) == 1, f"{method} {path} tells ids apart"
            status = responses.pop()[0]
            assert status in (403, 404), f"{method} {path} returned {status}"

    # Administrators see has_signature in the profile, never the signature.
    for path in signature_paths:
        responses = {
            probe(run, admin, "GET", "profile", path.format(i)) for i in user_ids
        }
        assert responses == {(404, '{"detail":"signature not found"}')}, path
