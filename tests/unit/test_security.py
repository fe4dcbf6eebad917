"""Secrets, the password policy, redaction and settings (no store involved)."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from campus.infra.redaction import REDACTED, redact
from campus.infra.settings import DEFAULT_DOMAIN_SUFFIX, Settings, dsn_to_library_env
from campus.rules.security import (
    PASSWORD_RULES,
    generate_password,
    hash_secret,
    new_token,
    password_problems,
    token_digest,
    verify_secret,
)

MESSAGES = dict(PASSWORD_RULES)
LENGTH, LETTER, DIGIT, SPECIAL, MIXED = (
    MESSAGES["min_length"], MESSAGES["letter"], MESSAGES["digit"], MESSAGES["special"], MESSAGES["mixed_case"],
)


# -- password policy (Campus fiche 4) -----------------------------------------

def test_policy_names_the_five_rules_of_fiche_4() -> None:
    assert [rule for rule, _ in PASSWORD_RULES] == ["min_length", "letter", "digit", "special", "mixed_case"]
    assert "12" in LENGTH


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        pytest.param("Abcdefgh1234!", [], id="passes-all"),
        pytest.param("Abcdefgh12!", [LENGTH], id="11-chars"),
        pytest.param("Abcdefghi12!", [], id="exactly-12-chars"),
        pytest.param("1234567890!#", [LETTER, MIXED], id="no-letter"),
        pytest.param("Abcdefghijk!", [DIGIT], id="no-digit"),
        pytest.param("Abcdefghijk1", [SPECIAL], id="no-special"),
        pytest.param("Abcdefghij1 ", [], id="space-is-special"),
        pytest.param("abcdefghij1!", [MIXED], id="lower-only"),
        pytest.param("ABCDEFGHIJ1!", [MIXED], id="upper-only"),
        pytest.param("", [LENGTH, LETTER, DIGIT, SPECIAL, MIXED], id="empty-fails-all-five"),
        pytest.param("       ", [LENGTH, LETTER, DIGIT, MIXED], id="short-spaces"),
        pytest.param("Ab1!", [LENGTH], id="short-but-otherwise-fine"),
        pytest.param("abc", [LENGTH, DIGIT, SPECIAL, MIXED], id="short-lower-letters"),
    ],
)
def test_password_problems_names_every_failing_rule(password: str, expected: list[str]) -> None:
    assert password_problems(password) == expected


def test_a_password_failing_all_five_rules_gets_five_distinct_messages() -> None:
    problems = password_problems("")
    assert len(problems) == 5
    assert len(set(problems)) == 5


@pytest.mark.parametrize("length", [12, 14, 20, 32])
def test_generated_passwords_pass_the_policy_and_have_the_length(length: int) -> None:
    seen = set()
    for _ in range(50):
        password = generate_password(length)
        assert len(password) == length
        assert password_problems(password) == [], password
        assert all(c in string.ascii_letters + string.digits + string.punctuation for c in password)
        seen.add(password)
    assert len(seen) == 50  # random, not a constant


def test_generated_password_default_length_is_14() -> None:
    assert len(generate_password()) == 14


# -- hashing ----------------------------------------------------------------------

def test_hash_secret_is_argon2id_and_verifies() -> None:
    hashed = hash_secret("Correct-horse-42")
    assert hashed.startswith("$argon2id$")
    assert "Correct-horse-42" not in hashed
    assert verify_secret(hashed, "Correct-horse-42") is True
    assert verify_secret(hashed, "correct-horse-42") is False
    assert verify_secret(hashed, "") is False


def test_hash_secret_is_salted() -> None:
    assert hash_secret("same secret") != hash_secret("same secret")


@pytest.mark.parametrize("stored", [None, "", "not-a-hash", "$argon2id$garbage"])
def test_verify_secret_without_a_valid_hash_is_false(stored: str | None) -> None:
    assert verify_secret(stored, "anything") is False


# -- tokens -----------------------------------------------------------------------

def test_token_digest_is_stable_sha256_hex() -> None:
    assert token_digest("abc") == token_digest("abc")
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert token_digest("abc") != token_digest("abd")


def test_new_tokens_have_256_bits_and_are_url_safe_and_distinct() -> None:
    tokens = [new_token() for _ in range(200)]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert len(token) >= 43  # 32 bytes in unpadded base64url
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token
        assert token_digest(token) != token


# -- redaction ----------------------------------------------------------------------

SECRET_KEYS = [
    "password", "console_password", "password_hash", "certificate_digest", "token_digest",
    "pin", "code", "invoice_number", "invoice_number_hash", "console_password_hash",
    "password_confirmation", "token", "certificate", "secret_answer", "Authorization", "PASSWORD",
]
PLAIN_KEYS = ["login", "email", "hosting_number", "name", "domain", "port", "status", "description"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_redact_hides_secret_keys(key: str) -> None:
    assert redact({key: "s3cr3t", "login": "alice"}) == {key: REDACTED, "login": "alice"}


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_redact_leaves_other_keys_alone(key: str) -> None:
    assert redact({key: "visible"}) == {key: "visible"}


def test_redact_recurses_into_nested_dicts_and_lists() -> None:
    value = {
        "user": {"login": "alice", "password_hash": "$argon2id$x", "devices": [{"name": "Bureau", "pin": "1234"}]},
        "events": [{"data": {"certificate_digest": "ab" * 32, "installed_at": "2026"}}, "plain", 3],
        "manager": {"name": "M. Dupont", "email": "m@example.org"},
        "invoice_number": {"nested": "whole subtree hidden"},
    }
    assert redact(value) == {
        "user": {"login": "alice", "password_hash": REDACTED, "devices": [{"name": "Bureau", "pin": REDACTED}]},
        "events": [{"data": {"certificate_digest": REDACTED, "installed_at": "2026"}}, "plain", 3],
        "manager": {"name": "M. Dupont", "email": "m@example.org"},
        "invoice_number": REDACTED,
    }
    # The input is not modified.
    assert value["user"]["password_hash"] == "$argon2id$x"


def test_redact_leaves_scalars_alone() -> None:
    for scalar in ("password", 12, None, True, 1.5):
        assert redact(scalar) == scalar


def test_redact_recurses_into_tuples() -> None:
    """Event data holds tuples (profiles, planning ids): a secret inside one must be hidden too."""
    assert redact({"items": ({"pin": "1234", "name": "Bureau"},)}) in (
        {"items": ({"pin": REDACTED, "name": "Bureau"},)},
        {"items": [{"pin": REDACTED, "name": "Bureau"}]},
    )


# -- settings -------------------------------------------------------------------------

def test_default_settings_use_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"CAMPUS_DATA_DIR": str(tmp_path / "d")})
    assert settings.data_dir == tmp_path / "d"
    assert not settings.uses_postgres
    env = settings.persistence_env()
    from eventsourcing.sqlite import SQLiteFactory
    from eventsourcing.utils import resolve_topic

    assert issubclass(resolve_topic(env["PERSISTENCE_MODULE"]), SQLiteFactory)
    assert Path(env["SQLITE_DBNAME"]).parent == tmp_path / "d"
    assert not any(k.startswith("POSTGRES_") for k in env)


def test_from_env_defaults_without_any_variable() -> None:
    settings = Settings.from_env({})
    assert settings.data_dir == Path("./var")
    assert settings.postgres_dsn is None
    assert settings.operator_token is None
    assert settings.domain_suffix == DEFAULT_DOMAIN_SUFFIX == "pronote-campus.net"
    assert settings.console_session_hours == 12
    assert Path(settings.persistence_env()["SQLITE_DBNAME"]).parent == Path("./var")


def test_from_env_reads_campus_variables_and_overrides_win(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CAMPUS_OPERATOR_TOKEN": "op-" + "x" * 40, "CAMPUS_DOMAIN_SUFFIX": "example.net",
            "CAMPUS_LOG_FORMAT": "json", "CAMPUS_LOG_LEVEL": "debug", "CAMPUS_MAX_BODY_BYTES": "2048",
            "CAMPUS_DATA_DIR": str(tmp_path), "UNRELATED": "x",
        },
        data_dir=tmp_path / "override", operator_token=None,
    )
    assert settings.operator_token == "op-" + "x" * 40
    assert settings.domain_suffix == "example.net"
    assert settings.log_format == "json"
    assert settings.log_level == "debug"
    assert settings.max_body_bytes == 2048
    assert settings.data_dir == tmp_path / "override"


def test_postgres_dsn_is_parsed_into_library_variables() -> None:
    settings = Settings.from_env({"CAMPUS_POSTGRES_DSN": "postgresql://camp%40us:p%40ss%3Aw@db.example:6543/campusdb?schema=school_a"})
    assert settings.uses_postgres
    env = settings.persistence_env()
    assert env["PERSISTENCE_MODULE"] == "campus.infra.store:CampusPostgresFactory"
    assert env["POSTGRES_HOST"] == "db.example"
    assert env["POSTGRES_PORT"] == "6543"
    assert env["POSTGRES_DBNAME"] == "campusdb"
    assert env["POSTGRES_USER"] == "camp@us"
    assert env["POSTGRES_PASSWORD"] == "p@ss:w"
    assert env["POSTGRES_SCHEMA"] == "school_a"
    assert "SQLITE_DBNAME" not in env


def test_dsn_defaults_and_schema_among_other_parameters() -> None:
    env = dsn_to_library_env("postgres:///?connect_timeout=3&schema=s1&sslmode=disable")
    assert env["POSTGRES_HOST"] == "127.0.0.1"
    assert env["POSTGRES_PORT"] == "5432"
    assert env["POSTGRES_DBNAME"] == "postgres"
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD"] == ""
    assert env["POSTGRES_SCHEMA"] == "s1"
    assert "POSTGRES_SCHEMA" not in dsn_to_library_env("postgresql://u@h/db")


def test_dsn_schema_is_percent_decoded_like_the_other_parts() -> None:
    env = dsn_to_library_env("postgresql://u%5Fx:p%26w@h/db%5F1?schema=school%5Fa")
    assert {k: env[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DBNAME", "POSTGRES_SCHEMA")} == {
        "POSTGRES_USER": "u_x", "POSTGRES_PASSWORD": "p&w", "POSTGRES_DBNAME": "db_1", "POSTGRES_SCHEMA": "school_a",
    }


@pytest.mark.parametrize("dsn", ["mysql://u@h/db", "sqlite:///x.db", "127.0.0.1:5432/db"])
def test_dsn_with_another_scheme_is_refused(dsn: str) -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        dsn_to_library_env(dsn)


def test_postgres_variables_pass_through_and_override_the_dsn() -> None:
    settings = Settings.from_env({
        "CAMPUS_POSTGRES_DSN": "postgresql://u:pw@h1:5432/db1?schema=s1",
        "POSTGRES_HOST": "h2", "POSTGRES_POOL_SIZE": "7", "POSTGRES_SCHEMA": "s2",
    })
    assert dict(settings.library_env) == {"POSTGRES_HOST": "h2", "POSTGRES_POOL_SIZE": "7", "POSTGRES_SCHEMA": "s2"}
    env = settings.persistence_env()
    assert env["POSTGRES_HOST"] == "h2"
    assert env["POSTGRES_POOL_SIZE"] == "7"
    assert env["POSTGRES_SCHEMA"] == "s2"
    assert env["POSTGRES_DBNAME"] == "db1"
    assert env["POSTGRES_USER"] == "u"


def test_postgres_dbname_alone_selects_postgres_with_defaults() -> None:
    settings = Settings.from_env({"POSTGRES_DBNAME": "campus"})
    assert settings.uses_postgres
    env = settings.persistence_env()
    assert env["PERSISTENCE_MODULE"] == "campus.infra.store:CampusPostgresFactory"
    assert env["POSTGRES_DBNAME"] == "campus"
    assert env["POSTGRES_HOST"] == "127.0.0.1"
    assert env["POSTGRES_USER"] == "postgres"


def test_log_lines_lose_secret_named_fields() -> None:
    from campus.infra.redaction import redact_log_event

    line = redact_log_event(None, "info", {"event": "x", "password": "Secret-123456!", "nested": {"pin": "1234"},
                                           "path": "/v1/console/users"})
    assert line == {"event": "x", "password": "[redacted]", "nested": {"pin": "[redacted]"},
                    "path": "/v1/console/users"}
