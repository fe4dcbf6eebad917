"""HTTP handlers: decode (done by the declaration), call one use case, encode."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from starlette.responses import Response

from campus.aggregates.planning import Profile
from campus.api import schemas as s
from campus.api.history_stream import EXPORT_MEDIA_TYPE, MEDIA_TYPE, history_export, history_stream, last_event_id
from campus.api.openapi import openapi_bytes
from campus.api.routing import Api, Auth, Call, Reply
from campus.api.views import account_view, controller_view, planning_view, user_view
from campus.errors import Invalid, NotFound
from campus.projections.history import HistoryQuery

api = Api()


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found") from None


# -- system ---------------------------------------------------------------------
@api.get("/healthz", auth=Auth.NONE, tag="system")
def healthz(call: Call) -> dict:
    """Liveness: the server answers and its store is reachable."""
    call.app.recorder.max_notification_id()
    return {"status": "ok"}


@api.get("/openapi.json", auth=Auth.NONE, tag="system")
def openapi(call: Call) -> Reply:
    """This document: every route, generated from the declarations that validate requests."""
    return Reply(openapi_bytes(api))


# -- operator -------------------------------------------------------------------
@api.post("/v1/operator/accounts", auth=Auth.OPERATOR, body=s.OpenAccount, response=s.OpenedAccountOut,
          status=201, tag="operator")
def open_account(call: Call, body: s.OpenAccount) -> Reply:
    """Open a hosting account; the console password and invoice number are shown only here."""
    opened = call.app.accounts.open_account(body.establishment, body.manager.name, str(body.manager.email), body.edition)
    return Reply({
        "hosting_number": opened.account.hosting_number,
        "console_password": opened.console_password,
        "invoice_number": opened.invoice_number,
        "establishment": opened.account.establishment,
    }, headers={"Cache-Control": "no-store"})


@api.get("/v1/operator/accounts/{hosting_number}", auth=Auth.OPERATOR, tag="operator")
def operator_account(call: Call) -> Reply:
    """Read a hosting account (no secrets)."""
    account = call.app.accounts.account_by_number(call.path["hosting_number"])
    return Reply(account_view(account), etag=account.etag)


@api.post("/v1/operator/accounts/{hosting_number}/console-password", auth=Auth.OPERATOR,
          response=s.ConsolePasswordOut, tag="operator")
def reset_console_password(call: Call) -> Reply:
    """Reset the console password (the manager cannot change it); open sessions end."""
    account, password = call.app.accounts.reset_console_password(call.path["hosting_number"])
    return Reply({"hosting_number": account.hosting_number, "console_password": password},
                 headers={"Cache-Control": "no-store"})


# -- console session --------------------------------------------------------------
@api.post("/v1/console/sessions", auth=Auth.NONE, body=s.OpenConsoleSession, response=s.ConsoleSessionOut,
          status=201, tag="console")
def open_console_session(call: Call, body: s.OpenConsoleSession) -> Reply:
    """Log in as hosting manager; the first login from a machine also needs the invoice number."""
    login = call.app.console_sessions.open_console_session(body.hosting_number, body.password, body.invoice_number, body.certificate)
    return Reply({"token": login.token, "certificate": login.certificate, "expires_at": login.session.expires_at},
                 headers={"Cache-Control": "no-store"})


@api.delete("/v1/console/sessions/current", auth=Auth.CONSOLE_ANY, status=204, tag="console")
def close_console_session(call: Call) -> None:
    """Log out: the token stops working at once."""
    assert call.token is not None
    call.app.console_sessions.close_console_session(call.token)


@api.post("/v1/console/licence-agreement", auth=Auth.CONSOLE_ANY, tag="console")
def accept_licence_agreement(call: Call) -> dict:
    """Accept the licence agreement (once); the rest of the console needs it."""
    account = call.app.accounts.accept_licence_agreement(call.account_id)
    return {"accepted": True, "accepted_at": account.licence_accepted_at}


# -- controller -------------------------------------------------------------------
@api.get("/v1/console/controller", auth=Auth.CONSOLE, response=s.ControllerOut, tag="controller")
def get_controller(call: Call) -> Reply:
    """The controller: domain, port, state."""
    controller = call.app.controllers.get_controller(call.account_id)
    return Reply(controller_view(controller), etag=controller.etag)


@api.put("/v1/console/controller/domain", auth=Auth.CONSOLE, body=s.BindDomain, response=s.ControllerOut,
         tag="controller")
def bind_controller_domain(call: Call, body: s.BindDomain) -> Reply:
    """Bind a domain name to the controller (port 21200)."""
    controller = call.app.controllers.bind_controller_domain(call.account_id, body.name, call.if_match)
    return Reply(controller_view(controller), etag=controller.etag)


@api.post("/v1/console/controller/activation", auth=Auth.CONSOLE, response=s.ControllerOut, tag="controller")
def activate_controller(call: Call) -> Reply:
    """Activate the controller: needs a bound domain and a superadministrator."""
    controller = call.app.controllers.activate_controller(call.account_id)
    return Reply(controller_view(controller), etag=controller.etag)


@api.delete("/v1/console/controller/activation", auth=Auth.CONSOLE, response=s.ControllerOut, tag="controller")
def deactivate_controller(call: Call) -> Reply:
    """Stop the controller."""
    controller = call.app.controllers.deactivate_controller(call.account_id)
    return Reply(controller_view(controller), etag=controller.etag)


# -- plannings --------------------------------------------------------------------
@api.get("/v1/console/plannings", auth=Auth.CONSOLE, tag="plannings")
def list_plannings(call: Call) -> dict:
    """The account's plannings."""
    return {"plannings": [planning_view(p) for p in call.app.plannings.list_plannings(call.account_id)]}


@api.get("/v1/console/plannings/{planning_id}", auth=Auth.CONSOLE, query=s.AsOf, response=s.PlanningOut,
         tag="plannings")
def get_planning(call: Call) -> Reply:
    """One planning — now, or `as_of` an instant (with the log `position` used)."""
    planning_id = _uuid(call.path["planning_id"], "planning")
    if call.query.as_of is not None:
        past, position = call.app.time_machine.planning_as_of(call.account_id, planning_id, call.query.as_of)
        return Reply({**planning_view(past), "as_of": call.query.as_of, "position": position})
    planning = call.app.plannings.get_planning(call.account_id, planning_id)
    return Reply(planning_view(planning), etag=planning.etag)


@api.patch("/v1/console/plannings/{planning_id}", auth=Auth.CONSOLE, body=s.PlanningChanges,
           response=s.PlanningOut, tag="plannings")
def update_planning(call: Call, body: s.PlanningChanges) -> Reply:
    """Change name, publication name, .net licence switch, domain or time zone."""
    planning = call.app.plannings.update_planning(call.account_id, _uuid(call.path["planning_id"], "planning"),
                                        body.model_dump(exclude_unset=True), call.if_match)
    return Reply(planning_view(planning), etag=planning.etag)


@api.put("/v1/console/plannings/{planning_id}/profiles/{profile}", auth=Auth.CONSOLE, body=s.ProfileAssignment,
         response=s.PlanningOut, tag="plannings")
def assign_profile(call: Call, body: s.ProfileAssignment) -> Reply:
    """Set who holds a profile (administration, modification, consultation) on the planning."""
    profile = _profile(call.path["profile"])
    planning = call.app.plannings.assign_profile(call.account_id, _uuid(call.path["planning_id"], "planning"), profile,
                                       body.logins, call.if_match)
    return Reply(planning_view(planning), etag=planning.etag)


def _profile(value: str) -> Profile:
    try:
        return Profile(value)
    except ValueError:
        raise NotFound(f"no profile {value!r}: use administration, modification or consultation") from None


@api.get("/v1/console/assignment-templates", auth=Auth.CONSOLE, tag="plannings")
def list_templates(call: Call) -> dict:
    """Saved assignment templates."""
    account = call.app.accounts.get_account(call.account_id)
    return {"templates": [
        {"name": name, "assignments": {k: list(v) for k, v in t["assignments"].items()}}
        for name, t in sorted(account.assignment_templates.items())
    ]}


@api.post("/v1/console/assignment-templates", auth=Auth.CONSOLE, body=s.SaveTemplate, status=201, tag="plannings")
def save_template(call: Call, body: s.SaveTemplate) -> dict:
    """Save a planning's current profile assignment as a named template."""
    try:
        planning_id = UUID(body.planning_id)
    except ValueError:
        raise Invalid.field("planning_id", "is not a planning id") from None
    account = call.app.plannings.save_assignment_template(call.account_id, body.name, planning_id)
    template = account.assignment_templates[body.name.strip()]
    return {"name": body.name.strip(), "assignments": {k: list(v) for k, v in template["assignments"].items()}}


@api.post("/v1/console/plannings/{planning_id}/assignment-template", auth=Auth.CONSOLE, body=s.ApplyTemplate,
          response=s.PlanningOut, tag="plannings")
def apply_template(call: Call, body: s.ApplyTemplate) -> Reply:
    """Apply a saved assignment template to the planning."""
    planning = call.app.plannings.apply_assignment_template(call.account_id, _uuid(call.path["planning_id"], "planning"),
                                                  body.name, call.if_match)
    return Reply(planning_view(planning), etag=planning.etag)


# -- users ------------------------------------------------------------------------
@api.post("/v1/console/superadministrator", auth=Auth.CONSOLE, body=s.NewSuperadministrator,
          response=s.UserOut, status=201, tag="users")
def create_superadministrator(call: Call, body: s.NewSuperadministrator) -> Reply:
    """Create the first superadministrator (password rules of Campus fiche 4)."""
    user = call.app.users.create_first_superadministrator(
        call.account_id, first_name=body.first_name, last_name=body.last_name, login=body.login,
        password=body.password, password_confirmation=body.password_confirmation)
    return Reply(user_view(user), etag=user.etag)


@api.post("/v1/console/users", auth=Auth.CONSOLE, body=s.NewUser, response=s.CreatedUserOut, status=201,
          tag="users")
def create_user(call: Call, body: s.NewUser) -> Reply:
    """Create a user; the generated password is shown only here."""
    created = call.app.users.create_user(
        call.account_id, login=body.login, last_name=body.last_name, first_name=body.first_name,
        civility=body.civility, status=body.status, email=str(body.email) if body.email else None,
        external_ids=body.external_ids.model_dump() if body.external_ids else None)
    return Reply({**user_view(created.user), "password": created.password}, etag=created.user.etag,
                 headers={"Cache-Control": "no-store"})


@api.get("/v1/console/users", auth=Auth.CONSOLE, tag="users")
def list_users(call: Call) -> dict:
    """The school's directory users."""
    return {"users": [user_view(u) for u in call.app.users.list_users(call.account_id)]}


@api.get("/v1/console/users/{login}", auth=Auth.CONSOLE, response=s.UserOut, tag="users")
def get_user(call: Call) -> Reply:
    """One user."""
    user = call.app.users.get_user(call.account_id, call.path["login"])
    return Reply(user_view(user), etag=user.etag)


@api.patch("/v1/console/users/{login}", auth=Auth.CONSOLE, body=s.UserChanges, response=s.UserOut, tag="users")
def update_user(call: Call, body: s.UserChanges) -> Reply:
    """Change a user's names, status, e-mail, console access or external identifiers."""
    changes = body.model_dump(exclude_unset=True)
    if "email" in changes and changes["email"] is not None:
        changes["email"] = str(changes["email"])
    user = call.app.users.update_user(call.account_id, call.path["login"], changes, call.if_match)
    return Reply(user_view(user), etag=user.etag)


@api.post("/v1/console/users/{login}/password", auth=Auth.CONSOLE, tag="users")
def reset_user_password(call: Call) -> Reply:
    """Give a user a new generated password (shown only here); the user's open sessions end."""
    user, password = call.app.users.reset_user_password(call.account_id, call.path["login"])
    return Reply({"login": user.login, "password": password}, etag=user.etag, headers={"Cache-Control": "no-store"})


# -- history ----------------------------------------------------------------------
def _history_query(call: Call, limit: int) -> HistoryQuery:
    q: s.HistoryParams = call.query
    return HistoryQuery(
        tenant=str(call.account_id), types=tuple(t.strip() for t in (q.type or "").split(",") if t.strip()),
        actor=q.actor, aggregate_id=str(q.aggregate_id) if q.aggregate_id else None, since=q.since,
        until=q.until, after=q.after, limit=limit, planning_id=str(q.planning_id) if q.planning_id else None,
        base_id=str(q.base_id) if q.base_id else None)


@api.get("/v1/console/history", auth=Auth.CONSOLE, query=s.HistoryParams, tag="history")
def history(call: Call) -> dict:
    """The school's events, oldest first, filtered and paged by position."""
    events, next_position = call.app.history.page(
        _history_query(call, min(call.query.limit, call.app.settings.history_page_max)))
    return {"events": events, "next": next_position}


@api.get("/v1/console/history/export", auth=Auth.CONSOLE, query=s.HistoryParams, tag="history",
         produces=EXPORT_MEDIA_TYPE)
def export_history(call: Call) -> Response:
    """The filtered history as JSON lines (one event per line), streamed to the end; `limit` is ignored."""
    return history_export(call.app, _history_query(call, call.app.settings.history_page_max))


@api.get("/v1/console/history/stream", auth=Auth.CONSOLE, query=s.HistoryParams, tag="history",
         produces=MEDIA_TYPE)
def stream_history(call: Call) -> Response:
    """Follow the filtered history live (Server-Sent Events), resuming after Last-Event-ID (else `after`)."""
    query = _history_query(call, call.app.settings.history_page_max)
    resume = last_event_id(call.headers)
    if resume is not None:
        query = replace(query, after=resume)
    return history_stream(call.app, query, call.token or "")
