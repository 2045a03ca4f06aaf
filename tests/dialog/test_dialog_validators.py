"""Table tests for every named validator: each row is a customer message and what it must become."""

from __future__ import annotations

import pytest

from orderbot.dialog.validators.base import Invalid, Valid, ValidationContext
from orderbot.dialog.validators.choices import CatalogItem, parse_catalog_choice, parse_yes_no
from orderbot.dialog.validators.contacts import parse_address, parse_email, parse_phone
from orderbot.dialog.validators.quantities import parse_integer
from orderbot.dialog.validators.registry import VALIDATORS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ул. Киевская 120, кв. 5", Valid("ул. Киевская 120, кв. 5")),
        ("  ул.   Киевская\n120  ", Valid("ул. Киевская 120")),
        ("Kievskaya 120", Valid("Kievskaya 120")),
        ("Абая5", Valid("Абая5")),  # exactly 5 characters
        ("Абая", Invalid("too_short")),  # 4
        ("ул", Invalid("too_short")),
        ("   ", Invalid("too_short")),
        ("a  b", Invalid("too_short")),  # folded to "a b": 3 characters
        ("12345 678", Invalid("no_letters")),
        ("x" * 200, Valid("x" * 200)),
        ("x" * 201, Invalid("too_long")),
        ("ул. " + "a" * 196 + "     ", Valid("ул. " + "a" * 196)),  # trailing spaces don't count
    ],
)
def test_parse_address(text: str, expected: object) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("555123456", Valid("+996555123456")),
        ("0555123456", Valid("+996555123456")),
        ("996555123456", Valid("+996555123456")),
        ("0555-123-456", Valid("+996555123456")),
        ("+996 (555) 123-456", Valid("+996555123456")),
        ("(0555) 12 34 56", Valid("+996555123456")),
        ("0555 123 456", Valid("+996555123456")),
        ("мой номер 0555 123 456", Valid("+996555123456")),
        ("my number is 555123456, call me", Valid("+996555123456")),
        ("+7 912 345 67 89", Valid("+79123456789")),
        ("+44 20 7946 0958", Valid("+442079460958")),
        ("123", Invalid("invalid")),
        ("+9965551234567", Invalid("invalid")),
        ("9965551234567", Invalid("invalid")),
        ("телефон", Invalid("invalid")),
        ("", Invalid("invalid")),
    ],
)
def test_parse_phone(text: str, expected: object) -> None:
    assert parse_phone(text, region="KG") == expected


def test_parse_phone_uses_the_region() -> None:
    assert parse_phone("8 912 345 67 89", region="RU") == Valid("+79123456789")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", Valid(1)),
        ("10", Valid(10)),
        ("50", Valid(50)),
        ("10 бутылей", Valid(10)),
        ("3шт", Valid(3)),
        ("5 bottles", Valid(5)),
        ("мне 2 бутыли, пожалуйста", Valid(2)),
        ("один", Valid(1)),
        ("одна", Valid(1)),
        ("одну", Valid(1)),
        ("две", Valid(2)),
        ("два", Valid(2)),
        ("три бутыли", Valid(3)),
        ("десять", Valid(10)),
        ("пятнадцать", Valid(15)),
        ("двадцать пять", Valid(25)),
        ("сорок два", Valid(42)),
        ("пятьдесят", Valid(50)),
        ("Двадцать", Valid(20)),
        ("one", Valid(1)),
        ("twelve", Valid(12)),
        ("twenty-five", Valid(25)),
        ("twenty five", Valid(25)),
        ("Fifty", Valid(50)),
        ("10 (десять)", Valid(10)),  # the same number twice is not ambiguous
        ("2 бутыли по 19 л", Valid(2)),  # 19 l is the bottle, not a second quantity
        ("3 x 19l", Valid(3)),
        ("19 литров", Invalid("not_a_number")),
        ("1.5", Invalid("decimal")),
        ("1,5", Invalid("decimal")),
        ("2.0", Invalid("decimal")),
        ("полторы", Invalid("decimal")),
        ("half", Invalid("decimal")),
        ("-5", Invalid("negative")),
        ("минус 5", Invalid("negative")),
        ("2 or 3", Invalid("range")),
        ("2-3", Invalid("range")),
        ("2 - 3", Invalid("range")),
        ("2 или 3", Invalid("range")),
        ("два или три", Invalid("range")),
        ("5 10", Invalid("range")),
        ("1e3", Invalid("not_a_number")),
        ("2E5", Invalid("not_a_number")),
        ("много", Invalid("not_a_number")),
        ("a dozen", Invalid("not_a_number")),
        ("", Invalid("not_a_number")),
        ("0", Invalid("too_small")),
        ("ноль", Invalid("too_small")),
        ("51", Invalid("too_large")),
        ("fifty one", Invalid("too_large")),
        ("пятьдесят один", Invalid("too_large")),
        ("сто", Invalid("too_large")),
        ("99999999999999999999", Invalid("too_large")),
    ],
)
def test_parse_integer_as_quantity(text: str, expected: object) -> None:
    assert parse_integer(text, minimum=1, maximum=50) == expected


@pytest.mark.parametrize(
    ("text", "minimum", "maximum", "expected"),
    [
        ("0", 0, 10, Valid(0)),
        ("11", 0, 10, Invalid("too_large")),
        ("4", 5, None, Invalid("too_small")),
        ("1000", 5, None, Valid(1000)),
    ],
)
def test_parse_integer_generic_range(
    text: str, minimum: int, maximum: int | None, expected: object
) -> None:
    assert parse_integer(text, minimum=minimum, maximum=maximum) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("да", Valid(True)),
        ("Да!", Valid(True)),
        ("ДА", Valid(True)),
        ("ага", Valid(True)),
        ("угу", Valid(True)),
        ("конечно", Valid(True)),
        ("верно", Valid(True)),
        ("всё верно", Valid(True)),
        ("Да, всё верно", Valid(True)),
        ("да, пожалуйста", Valid(True)),
        ("подтверждаю", Valid(True)),
        ("ок", Valid(True)),
        ("окей", Valid(True)),
        ("yes", Valid(True)),
        ("Yes please", Valid(True)),
        ("yep", Valid(True)),
        ("yeah", Valid(True)),
        ("sure", Valid(True)),
        ("OK", Valid(True)),
        ("okay.", Valid(True)),
        ("confirm", Valid(True)),
        ("correct", Valid(True)),
        ("ооба", Valid(True)),
        ("макул", Valid(True)),
        ("+", Valid(True)),
        ("👍", Valid(True)),
        ("👍🏽", Valid(True)),
        ("нет", Valid(False)),
        ("Нет.", Valid(False)),
        ("не надо", Valid(False)),
        ("нет, не надо", Valid(False)),
        ("неправильно", Valid(False)),
        ("неверно", Valid(False)),
        ("не верно", Valid(False)),
        ("no", Valid(False)),
        ("nope", Valid(False)),
        ("no way", Valid(False)),
        ("No, thanks", Valid(False)),
        ("жок", Valid(False)),
        ("туура эмес", Valid(False)),
        ("-", Valid(False)),
        ("👎", Valid(False)),
        ("монета", Invalid("unclear")),  # "нет" inside a word is not a no
        ("book", Invalid("unclear")),  # "ok" inside a word is not a yes
        ("yesterday", Invalid("unclear")),
        ("maybe", Invalid("unclear")),
        ("не знаю", Invalid("unclear")),
        ("not sure", Invalid("unclear")),
        ("да нет", Invalid("unclear")),
        ("ок 👎", Invalid("unclear")),
        ("да 👍", Valid(True)),
        ("да, но адрес другой", Invalid("unclear")),
        ("", Invalid("unclear")),
    ],
)
def test_parse_yes_no(text: str, expected: object) -> None:
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("✅ Оформить", Valid(True)), ("✅ оформить", Valid(True)), ("❌ Отмена", Valid(False))],
)
def test_parse_yes_no_counts_button_labels(text: str, expected: object) -> None:
    assert parse_yes_no(text, buttons=["✅ Оформить", "❌ Отмена"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user@example.com", Valid("user@example.com")),
        ("  User@Example.COM ", Valid("User@example.com")),
        ("my email: user@example.com.", Valid("user@example.com")),
        ("user@", Invalid("invalid")),
        ("user.example.com", Invalid("invalid")),
        ("a@b.com c@d.com", Invalid("invalid")),
        ("", Invalid("invalid")),
    ],
)
def test_parse_email(text: str, expected: object) -> None:
    assert parse_email(text) == expected


CATALOG = [
    CatalogItem("fdm", ("FDM печать", "FDM printing")),
    CatalogItem("sla", ("Фотополимер", "Resin")),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", Valid("fdm")),
        ("2.", Valid("sla")),
        ("fdm печать", Valid("fdm")),
        ("RESIN", Valid("sla")),
        ("sla", Valid("sla")),
        ("3", Invalid("unknown_choice")),
        ("0", Invalid("unknown_choice")),
        ("metal", Invalid("unknown_choice")),
    ],
)
def test_parse_catalog_choice(text: str, expected: object) -> None:
    assert parse_catalog_choice(text, CATALOG) == expected


@pytest.mark.parametrize(
    ("name", "text", "params", "expected"),
    [
        ("address", "ул", {}, Invalid("too_short")),
        ("address", "Абай", {"min_length": 3}, Valid("Абай")),
        ("phone", "0555123456", {}, Valid("+996555123456")),
        ("quantity", "51", {"min": 1, "max": 50}, Invalid("too_large")),
        ("integer", "7", {"min": 1, "max": 9}, Valid(7)),
        ("yes_no", "да", {}, Valid(True)),
        ("email", "a@example.com", {}, Valid("a@example.com")),
        ("catalog_choice", "2", {"items": [{"id": "a"}, {"id": "b"}]}, Valid("b")),
        ("catalog_choice", "Beta", {"items": [{"id": "a"}, {"id": "b"}]}, Valid("b")),
        (
            "catalog_choice",
            "Gamma",
            {"items": [{"id": "a"}, {"id": "b"}]},
            Invalid("unknown_choice"),
        ),
    ],
)
def test_registry_runs_each_validator_with_its_params(
    name: str, text: str, params: dict[str, object], expected: object
) -> None:
    validator = VALIDATORS[name]
    validator.check_params(params)
    # Button labels are names of catalog items (one per item, in order).
    buttons = ("Alpha", "Beta") if name == "catalog_choice" else ()
    context = ValidationContext(params=params, phone_region="KG", buttons=buttons)
    result = validator.run(text, context)
    assert result == expected
    if isinstance(result, Invalid):
        assert result.reason in validator.reasons


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("quantity", {"min": 5, "max": 1}),
        ("quantity", {"maximum": 5}),
        ("quantity", {"min": "one"}),
        ("address", {"min_length": 0}),
        ("phone", {"region": "KG"}),
        ("catalog_choice", {}),
        ("catalog_choice", {"items": [{"name": "x"}]}),
    ],
)
def test_registry_rejects_bad_params(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        VALIDATORS[name].check_params(params)
