"""Page tokens (collector/paging.py): what a response hands out comes back as the same key, and
anything else a client sends is refused naming page_token or page_size."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmsfleet.collector.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_TOKEN_LENGTH,
    BadPageToken,
    decode_id_token,
    decode_token,
    encode_token,
    page_size,
)
from rmsfleet.contract.facts import MAX_URL_LENGTH


def test_page_size_defaults_and_is_capped() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(7) == 7
    assert page_size(10**6) == MAX_PAGE_SIZE
    with pytest.raises(BadPageToken, match=r"^page_size: expected a number >= 0$"):
        page_size(-1)


@given(st.text(alphabet=st.characters(min_codepoint=32, codec="utf-8"), min_size=1, max_size=MAX_URL_LENGTH))
def test_a_token_gives_back_the_key_it_was_made_from(key: str) -> None:
    assert decode_token(encode_token(key)) == key


def test_the_longest_key_fits_in_a_token() -> None:
    key = "\U0001f600" * MAX_URL_LENGTH  # four UTF-8 bytes a character
    assert len(encode_token(key)) <= MAX_TOKEN_LENGTH
    assert decode_token(encode_token(key)) == key


def test_an_empty_token_is_the_first_page() -> None:
    assert decode_token("") is None
    assert decode_id_token("") is None


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
        encode_token("a\x00b"),  # a NUL cannot reach PostgreSQL
        encode_token("line\nbreak"),
        "A" * (MAX_TOKEN_LENGTH + 1),
    ],
)
def test_a_token_no_response_gave_is_refused(token: str) -> None:
    with pytest.raises(BadPageToken) as refused:
        decode_token(token)
    assert refused.value.field == "page_token"
    assert len(str(refused.value)) < 200, "the message never quotes the token"


def test_numeric_keys_must_fit_a_bigint() -> None:
    assert decode_id_token(encode_token("42")) == 42
    assert decode_id_token(encode_token(str(2**63 - 1))) == 2**63 - 1
    for key in (str(2**63), "-1", "4e2", "\u0664\u0662"):  # the last: Arabic-Indic digits
        with pytest.raises(BadPageToken, match=r"^page_token: "):
            decode_id_token(encode_token(key))
