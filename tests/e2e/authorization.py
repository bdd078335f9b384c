"""The callers and the request builders of the authorization matrix.

``World`` creates the people and tokens once. Each matrix row builds its
request for one caller through a ``Build`` function, which may create the
resources that the request consumes (a token to delete, a session to end)
and return a cleanup that runs after the request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import USED_PASSWORDS, Person, RunContext, bearer, make_person
from tests.images import encode, sample

DAY = 86400
LONG_DAYS = 180
SETTING_KEY = "pat_max_expire_days"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


PNG = encode(sample(), "PNG")


@dataclass
class World:
    """The people and tokens that the matrix's callers present."""

    run: RunContext
    admin: str  # the first administrator's session, for set-up only
    user: Person
    other: Person
    administrator: Person
    collaborator: Person  # a user with a token, then demoted
    deactivated: Person  # a user with a token, then deactivated
    attribute_id: str
    kept_token_id: str = ""
    pats: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> httpx.Client:
        return self.run.api.http

    def url(self, service: str, path: str) -> str:
        return self.run.stack.urls[service] + path

    def call(
        self,
        method: str,
        service: str,
        path: str,
        credential: str,
        expect: tuple[int, ...],
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **bearer(credential)}
        response = self.http.request(
            method, self.url(service, path), headers=headers, **kwargs
        )
        assert response.status_code in expect, (
            f"set-up {method} {path} returned {response.status_code}: "
            f"{response.text[:300]}"
        )
        return response

    def create_token(self, person: Person, days: int = LONG_DAYS) -> dict[str, Any]:
        return self.run.api.create_token(person.session, unique("matrix-"), days)

    def delete_token(self, token_id: str) -> None:
        path = f"/v1/users/{self.user.id}/tokens/{token_id}"
        self.call("DELETE", "tokens", path, self.admin, (204, 404))

    def sign_in(self, person: Person) -> str:
        return self.run.api.sign_in(person.user["username"], person.password)

    def validate_status(self, pat: str) -> int:
        response = self.http.get(
            self.url("tokens", "/v1/auth/validate"), headers=bearer(pat)
        )
        return response.status_code

    def wait_for_validation(self, pat: str, expected: int) -> None:
        """Wait until the tokens service returns ``expected`` for ``pat``."""
        deadline = time.monotonic() + 30
        while self.validate_status(pat) != expected:
            assert time.monotonic() < deadline, f"validation never gave {expected}"
            time.sleep(0.1)


def build_world(run: RunContext, admin: str) -> World:
    """Create the callers: three people, an administrator and their tokens."""
    user = make_person(run, admin)
    collaborator = make_person(run, admin)
    deactivated = make_person(run, admin)
    administrator = make_person(run, admin, role="administrator")
    other = make_person(run, admin)
    attribute = run.api.request(
        "POST",
        "profile",
        "/v1/attributes",
        admin,
        json={"name": unique("Matrix "), "type": "text", "user_editable": True},
        expect=201,
    )
    world = World(
        run,
        admin,
        user,
        other,
        administrator,
        collaborator,
        deactivated,
        attribute_id=attribute["id"],
    )

    # The expired token is made first and the clock moved past its end, so
    # the tokens made after it keep their whole lifetime.
    expired = world.create_token(user, days=1)
    run.api.advance_clock(DAY + 60)
    world.wait_for_validation(expired["token"], 401)
    world.pats["expired"] = expired["token"]

    kept = world.create_token(user)
    world.kept_token_id = kept["id"]
    world.pats["user"] = kept["token"]
    world.pats["other"] = world.create_token(other)["token"]
    world.pats["administrator"] = world.create_token(administrator)["token"]

    deleted = world.create_token(user)
    world.call("DELETE", "tokens", f"/v1/tokens/{deleted['id']}", user.session, (204,))
    world.wait_for_validation(deleted["token"], 401)
    world.pats["deleted"] = deleted["token"]

    world.pats["collaborator"] = world.create_token(collaborator)["token"]
    world.call(
        "PATCH",
        "profile",
        f"/v1/users/{collaborator.id}",
        admin,
        (200,),
        json={"role": "collaborator"},
    )
    world.wait_for_validation(world.pats["collaborator"], 403)

    world.pats["deactivated"] = world.create_token(deactivated)["token"]
    world.call(
        "PATCH",
        "profile",
        f"/v1/users/{deactivated.id}",
        admin,
        (200,),
        json={"active": False},
    )
    world.wait_for_validation(world.pats["deactivated"], 403)
    return world


@dataclass(frozen=True)
class Column:
    """A caller: who presents which credential.

    ``person`` names the World attribute of the person acting, used to set up
    their own resources; ``pat`` names the token in ``World.pats``. A column
    with neither is anonymous.
    """

    name: str
    person: str | None = None
    session: bool = False
    pat: str | None = None
    switched_off: bool = False  # sent while pat_enabled is No

    @property
    def fresh_pat_allowed(self) -> bool:
        """Whether a new token of the person can stand in for the usual one."""
        return self.pat in ("user", "other", "administrator")

    def acting(self, world: World) -> Person | None:
        if self.person is None:
            return None
        person: Person = getattr(world, self.person)
        return person

    def credential(self, world: World) -> str | None:
        if self.session:
            person = self.acting(world)
            assert person is not None
            return person.session
        if self.pat is not None:
            return world.pats[self.pat]
        return None


@dataclass
class Request:
    """One cell's request, as a row's ``Build`` function made it."""

    params: dict[str, str] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    credential: str | None = None  # replaces the column's credential
    cleanup: Callable[[httpx.Response], None] | None = None


Build = Callable[[World, Column], Request]


def plain(world: World, column: Column) -> Request:
    return Request()


def with_json(body: dict[str, Any]) -> Build:
    def build(world: World, column: Column) -> Request:
        return Request(kwargs={"json": body})

    return build


def png_body(world: World, column: Column) -> Request:
    headers = {"Content-Type": "application/octet-stream"}
    return Request(kwargs={"content": PNG, "headers": headers})


# Set-up of the resources a request reads or removes.


def ensure_picture(world: World, person: Person | None) -> None:
    if person is not None:
        world.call(
            "PUT",
            "profile",
            "/v1/me/picture",
            person.session,
            (200,),
            content=PNG,
            headers={"Content-Type": "application/octet-stream"},
        )


def ensure_signature(world: World, person: Person | None) -> None:
    if person is not None:
        world.call(
            "PUT",
            "profile",
            "/v1/me/signature/text",
            person.session,
            (200,),
            json={"text": f"{person.user['display_name']}, signed"},
        )


def own_picture(world: World, column: Column) -> Request:
    ensure_picture(world, column.acting(world))
    return Request()


def own_signature(world: World, column: Column) -> Request:
    ensure_signature(world, column.acting(world))
    return Request()


def users_picture(world: World, column: Column) -> Request:
    ensure_picture(world, world.user)
    return Request()


def users_signature(world: World, column: Column) -> Request:
    ensure_signature(world, world.user)
    return Request()


# Credentials and tokens that one request uses up.


def fresh_session(world: World, column: Column) -> Request:
    person = column.acting(world)
    if not column.session or person is None:
        return Request()
    return Request(credential=world.sign_in(person))


def fresh_own_pat(world: World, column: Column) -> Request:
    person = column.acting(world)
    if not column.fresh_pat_allowed or person is None:
        return Request()
    token = world.create_token(person)

    def cleanup(_: httpx.Response) -> None:
        path = f"/v1/users/{person.id}/tokens/{token['id']}"
        world.call("DELETE", "tokens", path, world.admin, (204, 404))

    return Request(credential=token["token"], cleanup=cleanup)


def fresh_user_token(body: dict[str, Any] | None = None) -> Build:
    """Make a new token of the user for the path's ``token_id``."""

    def build(world: World, column: Column) -> Request:
        token = world.create_token(world.user)

        def cleanup(_: httpx.Response) -> None:
            world.delete_token(token["id"])

        kwargs = {} if body is None else {"json": body}
        return Request({"token_id": token["id"]}, kwargs, cleanup=cleanup)

    return build


def new_token_body(world: World, column: Column) -> Request:
    def cleanup(response: httpx.Response) -> None:
        if response.status_code == 201:
            created = response.json()
            path = f"/v1/users/{created['user_id']}/tokens/{created['id']}"
            world.call("DELETE", "tokens", path, world.admin, (204,))

    body = {"name": unique("matrix-new-"), "expire_in_days": 30}
    return Request(kwargs={"json": body}, cleanup=cleanup)


def new_attribute_body(world: World, column: Column) -> Request:
    def cleanup(response: httpx.Response) -> None:
        if response.status_code == 201:
            path = f"/v1/attributes/{response.json()['id']}"
            world.call("DELETE", "profile", path, world.admin, (204,))

    body = {"name": unique("Matrix new "), "type": "text"}
    return Request(kwargs={"json": body}, cleanup=cleanup)


def fresh_attribute(world: World, column: Column) -> Request:
    created = world.call(
        "POST",
        "profile",
        "/v1/attributes",
        world.admin,
        (201,),
        json={"name": unique("Matrix gone "), "type": "number"},
    ).json()

    def cleanup(_: httpx.Response) -> None:
        path = f"/v1/attributes/{created['id']}"
        world.call("DELETE", "profile", path, world.admin, (204, 404))

    return Request({"attribute_id": created["id"]}, cleanup=cleanup)


def new_user_body(world: World, column: Column) -> Request:
    name = unique("matrix")
    password = f"pw-{uuid.uuid4().hex}"
    USED_PASSWORDS.append(password)
    body = {
        "username": name,
        "display_name": f"Matrix {name}",
        "email": f"{name}@{world.run.run_id}.example.org",
        "password": password,
    }
    return Request(kwargs={"json": body})


def sign_in_body(world: World, column: Column) -> Request:
    body = {"username": world.user.user["username"], "password": world.user.password}
    return Request(kwargs={"json": body})


def password_change(world: World, column: Column) -> Request:
    """Change the acting person's password, and remember the new one."""
    person = column.acting(world) or world.user
    new_password = f"pw-{uuid.uuid4().hex}"
    USED_PASSWORDS.append(new_password)
    body = {"current_password": person.password, "new_password": new_password}

    def cleanup(response: httpx.Response) -> None:
        if response.status_code == 204:
            person.password = new_password

    return Request(kwargs={"json": body}, cleanup=cleanup)


def introspection_form(world: World, column: Column) -> Request:
    return Request(kwargs={"data": {"token": world.pats["user"]}})
