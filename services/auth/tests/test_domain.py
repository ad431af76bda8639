"""The email and password rules, and that their errors name the offending field."""

from __future__ import annotations

import pytest

from agentry.auth.domain import check_password_policy, normalize_email
from agentry.auth.errors import InvalidEmail, InvalidPassword


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Ada@Example.COM", "ada@example.com"), ("  bob.smith+x@mail.example.org ", "bob.smith+x@mail.example.org")],
)
def test_emails_are_trimmed_and_lower_cased(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "a b@example.com",
        "ada@@example.com",
        "ada@example..com",
        "ada@.example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ],
)
def test_malformed_emails_are_refused_naming_the_field(raw):
    with pytest.raises(InvalidEmail) as caught:
        normalize_email(raw)
    assert caught.value.message.startswith("email:")
    assert caught.value.code == "invalid_email"


@pytest.mark.parametrize("password", ["", "short", "x" * 7, "x" * 1025])
def test_passwords_outside_the_policy_are_refused_naming_the_field(password):
    with pytest.raises(InvalidPassword) as caught:
        check_password_policy(password)
    assert caught.value.message.startswith("password:")


@pytest.mark.parametrize("password", ["x" * 8, "correct horse battery staple", "x" * 1024])
def test_passwords_inside_the_policy_pass(password):
    check_password_policy(password)
