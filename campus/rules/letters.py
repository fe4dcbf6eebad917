"""Letters rendered from the school's templates (Campus fiche 11): placeholders
and the PDF.

A template is a title and a body with ``{placeholder}`` fields (Python format
syntax, names only: no attribute, index, conversion or format spec). The PDF
is drawn with fpdf2's core Helvetica font, whose encoding is Latin-1: French
text passes as is; other characters are transliterated (``œ`` → ``oe``, ``ł``
→ ``l``) rather than dropped. Logins and generated passwords are ASCII, so the
connection details themselves are never altered.
"""

from __future__ import annotations

import re
import string
import unicodedata
from datetime import datetime
from typing import Any

from fpdf import FPDF

from campus.errors import Invalid
from campus.rules.text import BLANK_MESSAGE, is_blank

# What the "Connexion des personnels" letter can say, and what each placeholder is.
PLACEHOLDERS: dict[str, str] = {
    "civility": "the user's civility (may be empty)",
    "first_name": "the user's first name",
    "last_name": "the user's last name",
    "login": "the user's login",
    "password": "the user's new password (generated when the letter is sent)",
    "establishment": "the school's name",
    "url": "the address of the school's controller (https://<domain>)",
    "domain": "the controller's domain name",
    "port": "the controller's port",
}
# Without these the letter would reset a password nobody can read.
REQUIRED_IN_BODY = ("login", "password")
# The title becomes the mail's subject, listed in the outbox: never a secret there.
FORBIDDEN_IN_TITLE = ("password",)
NEEDS_DOMAIN = ("url", "domain", "port")
MAX_TITLE = 200
MAX_BODY = 10_000

DEFAULT_TITLE = "Connexion des personnels"
DEFAULT_BODY = """Bonjour {civility} {first_name} {last_name},

Voici vos informations de connexion à PRONOTE Campus pour l'établissement {establishment}.

Identifiant : {login}
Mot de passe : {password}

Adresse du serveur : {domain} (port {port})

Ces informations sont personnelles et confidentielles : ne les communiquez à personne.
Lors de votre première connexion, vous pourrez renforcer la sécurité de votre compte
(code PIN, appareils reconnus)."""

_FORMATTER = string.Formatter()
_BETWEEN_WORDS = re.compile(r"(?<=\S) {2,}(?=\S)")
# Characters outside Latin-1 that French text often holds, and what the PDF shows instead.
_LATIN1_FALLBACK = {
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2026": "...", "\u0153": "oe", "\u0152": "OE", "\u20ac": "EUR",
    "\u2022": "-", "\u00a0": " ", "\u202f": " ",
}


def placeholders_in(field: str, text: str) -> list[str]:
    """The placeholder names `text` uses, in order; 422 naming `field` if the syntax is wrong."""
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise Invalid.field(field, f"{exc}; write a placeholder as {{name}} and a brace as {{{{ or }}}}") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise Invalid.field(field, f"{{{name}{'!' + conversion if conversion else ''}"
                                f"{':' + spec if spec else ''}}} is not a placeholder: write {{name}} only")
        names.append(name)
    return names


def validate_template(title: str, body: str) -> dict[str, list[str]]:
    """Check a template; return the placeholders each part uses. 422 names the part and the placeholder."""
    errors: list[dict] = []
    used: dict[str, list[str]] = {}
    for field, text, limit in (("title", title, MAX_TITLE), ("body", body, MAX_BODY)):
        if is_blank(text):
            errors.append({"field": field, "message": BLANK_MESSAGE})
            continue
        if len(text) > limit:
            errors.append({"field": field, "message": f"must be at most {limit} characters"})
            continue
        try:
            used[field] = placeholders_in(field, text)
        except Invalid as exc:
            errors += exc.errors
            continue
        for name in dict.fromkeys(used[field]):
            if name not in PLACEHOLDERS:
                errors.append({"field": field, "message": f"unknown placeholder {{{name}}}; the placeholders are "
                               + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)})
    for name in FORBIDDEN_IN_TITLE:
        if name in used.get("title", []):
            errors.append({"field": "title", "message": f"{{{name}}} cannot appear in the title (it is the mail's "
                           "subject, listed in the outbox); put it in the body"})
    if "body" in used:
        for name in REQUIRED_IN_BODY:
            if name not in used["body"]:
                errors.append({"field": "body", "message": f"the body must contain {{{name}}}: sending the letter "
                               "resets the password, which the user learns only from it"})
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return used


def fill(text: str, values: dict[str, Any]) -> str:
    """The text with its placeholders replaced (a validated template uses known names only)."""
    filled = text.format_map({name: "" if values.get(name) is None else values[name] for name in PLACEHOLDERS})
    # An empty civility leaves "Bonjour  Jean": collapse runs of spaces between words.
    return "\n".join(_BETWEEN_WORDS.sub(" ", line).rstrip() for line in filled.split("\n"))


def latin1(text: str) -> str:
    """`text` in the core PDF fonts' encoding: Latin-1 as is, other characters transliterated."""
    out = []
    for char in text:
        if char in _LATIN1_FALLBACK:
            out.append(_LATIN1_FALLBACK[char])
            continue
        try:
            char.encode("latin-1")
            out.append(char)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            out.append(base or "?")
    return "".join(out)


def render_pdf(title: str, body: str, *, establishment: str, created_at: datetime) -> bytes:
    """An A4 letter: the establishment, the title, then the body, paragraph by paragraph."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(created_at)
    pdf.set_title(latin1(title))
    pdf.set_author(latin1(establishment))
    pdf.set_creator("campus")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()
    pdf.set_margins(20, 20, 20)
    pdf.set_xy(20, 20)
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 5, latin1(establishment), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(0, 8, latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("Helvetica", size=11)
    for line in body.split("\n"):
        if line.strip():
            pdf.multi_cell(0, 6, latin1(line), new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.ln(4)
    return bytes(pdf.output())
