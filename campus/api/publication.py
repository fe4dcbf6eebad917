"""HTTP handlers of the publication of the web spaces and of delegated authentication
(hosting guide fiches 8 and 9, Campus fiche 9). Rules live in :mod:`campus.rules.publication`."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StrictBool, StringConstraints

from campus.api import schemas as s
from campus.api.handlers import _uuid, api
from campus.api.routing import Auth, Call, Reply
from campus.rules.publication import (
    DELEGATION_NAME_MAX,
    FONT_SIZES,
    HEIGHTS,
    PROTOCOLS,
    TITLE_MAX,
    URL_FIELDS,
)

Url = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
TAG = "publication"


class PublicationState(s.Strict):
    state: Literal["published", "stopped"] = Field(
        description="published needs the .net licence on and the server in service")


class Height(s.Strict):
    mode: Literal[tuple(HEIGHTS)] = Field(description="fixed: in pixels; variable: in percent of the screen")  # type: ignore[valid-type]
    value: int = Field(description=", ".join(f"{m}: {lo} to {hi} {u}" for m, (u, lo, hi) in HEIGHTS.items()))


class CommonPageChanges(s.Patch):
    NULLABLE = frozenset({"title", "logo_url"})

    title: Annotated[str, StringConstraints(max_length=TITLE_MAX * 2)] | None = Field(
        default=None, description=f"1 to {TITLE_MAX} characters; null: the establishment's name")
    text_color: str | None = Field(default=None, description="#RRGGBB (default #464646)")
    font_size: int | None = Field(default=None, description=f"{FONT_SIZES[0]} to {FONT_SIZES[1]} (default 26)")
    background_color: str | None = Field(default=None, description="#RRGGBB (default #FFFFFF)")
    height: Height | None = Field(default=None, description="default: variable, 10 % of the screen")
    logo: Literal["none", "establishment", "other"] | None = Field(
        default=None, description="establishment: the logo of the establishment's identity; other: logo_url")
    logo_url: Url | None = Field(default=None, description="https URL of the other logo (checked, never fetched)")


class PublicationSettings(s.Patch):
    NULLABLE = frozenset({"public_url"})

    spaces: dict[str, StrictBool] | None = Field(default=None, description="publish switch per space")
    public_url: Url | None = Field(
        default=None, description="https base address of the spaces; null: https://<planning domain>/…")
    common_page: CommonPageChanges | None = None


class NewDelegation(s.Strict):
    name: Annotated[str, StringConstraints(max_length=DELEGATION_NAME_MAX * 2)] = Field(
        description=f"1 to {DELEGATION_NAME_MAX} characters, e.g. Mon ENT")
    protocol: Literal[PROTOCOLS] = Field(description="cas, ws_federation, saml2 or educonnect")  # type: ignore[valid-type]
    server_url: Url | None = Field(default=None, description="CAS: the server's URL (one address)")
    authentication_url: Url | None = Field(default=None, description="CAS: the authentication link (separate)")
    validation_url: Url | None = Field(default=None, description="CAS: the validation link (separate)")
    sign_in_url: Url | None = Field(default=None, description="WS-Federation (required), SAML2: sign-in endpoint")
    metadata_url: Url | None = Field(default=None, description="SAML2 and EduConnect (required), WS-Federation")


class DelegationChange(s.Strict):
    active: StrictBool


class SpaceDelegation(s.Strict):
    delegation_id: str | None = Field(default=None, description="an active delegation's id; null: none")
    allow_direct: StrictBool = Field(default=True, description="also allow direct authentication (?login=true)")


class SpaceDelegations(s.Strict):
    spaces: dict[str, SpaceDelegation] = Field(description="the whole choice: spaces left out get none")


def _planning_id(call: Call) -> UUID:
    return _uuid(call.path["planning_id"], "planning")


def _reply(result: tuple, status: int | None = None, headers: dict | None = None) -> Reply:
    planning, description = result[0], result[1]
    return Reply(description, etag=planning.etag, status=status, headers=headers or {})


@api.get("/v1/console/plannings/{planning_id}/publication", auth=Auth.CONSOLE_OR_ADMIN, query=s.AsOf, tag=TAG)
def get_publication(call: Call) -> Reply:
    """The publication: state, public URL, each space's switch and URLs, common page, delegations —
    now, or `as_of` an instant (with the log `position` used)."""
    if call.query.as_of is not None:
        _, description, position = call.app.time_machine.publication_as_of(call.account_id, _planning_id(call), call.query.as_of)
        return Reply({**description, "as_of": call.query.as_of, "position": position})
    return _reply(call.app.publication.publication(call.account_id, _planning_id(call)))


@api.put("/v1/console/plannings/{planning_id}/publication", auth=Auth.CONSOLE_OR_ADMIN, body=PublicationState,
         tag=TAG)
def set_publication(call: Call, body: PublicationState) -> Reply:
    """Publish the spaces or stop their publication (hosting fiche 8)."""
    return _reply(call.app.publication.set_publication_state(call.account_id, _planning_id(call), body.state, call.if_match))


@api.patch("/v1/console/plannings/{planning_id}/publication/settings", auth=Auth.CONSOLE_OR_ADMIN,
           body=PublicationSettings, tag=TAG)
def change_settings(call: Call, body: PublicationSettings) -> Reply:
    """Change space switches, the public URL or the common page (publication stopped only)."""
    changes = body.model_dump(exclude_unset=True)
    return _reply(call.app.publication.change_publication_settings(call.account_id, _planning_id(call), changes, call.if_match))


@api.post("/v1/console/plannings/{planning_id}/publication/delegations", auth=Auth.CONSOLE_OR_ADMIN,
          body=NewDelegation, status=201, tag=TAG)
def add_delegation(call: Call, body: NewDelegation) -> Reply:
    """Add a delegation of authentication (inactive until activated; publication stopped only)."""
    urls = {k: getattr(body, k) for k in URL_FIELDS}
    planning, description, delegation_id = call.app.publication.add_delegation(
        call.account_id, _planning_id(call), name=body.name, protocol=body.protocol, urls=urls)
    delegation = next(d for d in description["delegations"] if d["id"] == delegation_id)
    return Reply({**description, "delegation": delegation}, etag=planning.etag, headers={
        "Location": f"/v1/console/plannings/{planning.id}/publication/delegations/{delegation_id}"})


@api.patch("/v1/console/plannings/{planning_id}/publication/delegations/{delegation_id}",
           auth=Auth.CONSOLE_OR_ADMIN, body=DelegationChange, tag=TAG)
def change_delegation(call: Call, body: DelegationChange) -> Reply:
    """Activate or deactivate a delegation (publication stopped only)."""
    return _reply(call.app.publication.set_delegation_active(call.account_id, _planning_id(call), call.path["delegation_id"],
                                                 body.active))


@api.delete("/v1/console/plannings/{planning_id}/publication/delegations/{delegation_id}",
            auth=Auth.CONSOLE_OR_ADMIN, status=204, tag=TAG)
def remove_delegation(call: Call) -> None:
    """Remove a delegation no space uses (publication stopped only)."""
    call.app.publication.remove_delegation(call.account_id, _planning_id(call), call.path["delegation_id"])


@api.put("/v1/console/plannings/{planning_id}/publication/space-delegations", auth=Auth.CONSOLE_OR_ADMIN,
         body=SpaceDelegations, tag=TAG)
def set_space_delegations(call: Call, body: SpaceDelegations) -> Reply:
    """Choose per space its delegation (or none) and whether direct authentication stays allowed."""
    choices = {k: v.model_dump() for k, v in body.spaces.items()}
    return _reply(call.app.publication.set_space_delegations(call.account_id, _planning_id(call), choices, call.if_match))
