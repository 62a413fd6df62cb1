"""Request parsing for the API: every failure is an ApiError that says what is allowed."""
from __future__ import annotations

import re

from flask import request
from werkzeug.exceptions import BadRequest

from app.errors import ApiError

TOPN_MIN, TOPN_MAX, TOPN_DEFAULT = 1, 100, 10
MAX_WORDS = 100  # words in one positive/negative list, pairs in one similarity request
MAX_TEXTS = 100  # texts in one cluster request
MAX_WORD_LENGTH = 100
# A character that is not whitespace, spelled out so that Python, the OpenAPI document's readers
# (ECMA-262 regular expressions) and Rust's agree: their \s differ. Python's str.isspace()
# characters, and U+FEFF (ECMA's).
BLANK = "\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = f"[^{BLANK}]"


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_input", f"{field}: {message}", field=field)


def json_body() -> dict:
    """The request's JSON object; 415 if it is not JSON, 400 if it does not parse."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as JSON with Content-Type: application/json "
                       f"(got {request.mimetype or 'no content type'})")
    try:
        body = request.get_json()
    except BadRequest:
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    except RecursionError:  # json's decoder recurses once per nesting level
        raise ApiError(400, "malformed_json", "the request body nests arrays or objects too deeply") from None
    if not isinstance(body, dict):
        raise invalid("body", f"must be a JSON object, got {json_type(body)}")
    return body


def json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def topn(value, field: str = "topn") -> int:
    """topn from a JSON body: an integer within 1..100 (10 when absent)."""
    if value is None:
        return TOPN_DEFAULT
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 78.0 is a whole number, and JSON Schema's integer
    if isinstance(value, bool) or not isinstance(value, int):
        got = value if isinstance(value, float) else json_type(value)
        raise invalid(field, f"must be a whole number from {TOPN_MIN} to {TOPN_MAX}, got {got}")
    if not TOPN_MIN <= value <= TOPN_MAX:
        raise invalid(field, f"must be from {TOPN_MIN} to {TOPN_MAX}, got {value}")
    return value


def topn_param(text: str | None, field: str = "topn") -> int:
    """topn from a query string or form field: digits, within 1..100 (10 when absent)."""
    if text is None:
        return TOPN_DEFAULT
    try:
        value = int(text.strip())
    except ValueError:
        raise invalid(field, f"must be a whole number from {TOPN_MIN} to {TOPN_MAX}, got {text!r}") from None
    return topn(value, field)


def count_param(name: str, low: int, high: int, default: int) -> int:
    """A whole number from the query string, digits only, within low..high (default when absent)."""
    text = request.args.get(name)
    if text is None:
        return default
    # Digits only: int() would also take "1_000", "+5" and other scripts' digits.
    if not re.fullmatch(r"[0-9]{1,18}", text.strip()) or not low <= int(text) <= high:
        raise invalid(name, f"must be a whole number from {low} to {high}, got {text[:20]!r}")
    return int(text)


def word(value, field: str) -> str:
    if not isinstance(value, str):
        raise invalid(field, f"must be a word (a string), got {json_type(value)}")
    if not re.search(NOT_BLANK, value):
        raise invalid(field, "must not be empty or blank")
    if len(value) > MAX_WORD_LENGTH:
        raise invalid(field, f"must be at most {MAX_WORD_LENGTH} characters, got {len(value)}")
    return value.strip()


def query_word(name: str) -> str:
    """A required word from the query string."""
    if name not in request.args:
        raise invalid(name, f"query parameter {name} is required, e.g. ?{name}=fire")
    return word(request.args[name], name)


def word_list(body: dict, field: str, required: bool) -> list[str]:
    """A list of 1..100 words (or, if not required, possibly absent or empty)."""
    value = body.get(field)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise invalid(field, f"must be a list of words, got {json_type(value)}")
    if required and not value:
        raise invalid(field, "must contain at least one word")
    if len(value) > MAX_WORDS:
        raise invalid(field, f"may hold at most {MAX_WORDS} words, got {len(value)}")
    return [word(item, f"{field}[{i}]") for i, item in enumerate(value)]


def text(value, field: str) -> str:
    if not isinstance(value, str):
        raise invalid(field, f"must be a text (a string), got {json_type(value)}")
    if not re.search(NOT_BLANK, value):
        raise invalid(field, "must not be empty or blank")
    return value


def pairs(body: dict) -> list[tuple[str, str]]:
    value = body.get("pairs")
    if not isinstance(value, list) or not value:
        raise invalid("pairs", "must be a non-empty list of [word, word] pairs, e.g. [[\"fire\", \"blaze\"]]")
    if len(value) > MAX_WORDS:
        raise invalid("pairs", f"may hold at most {MAX_WORDS} pairs, got {len(value)}")
    result = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise invalid(f"pairs[{i}]", f"must be a list of two words, got {json_type(pair)}"
                          + (f" of length {len(pair)}" if isinstance(pair, list) else ""))
        result.append((word(pair[0], f"pairs[{i}][0]"), word(pair[1], f"pairs[{i}][1]")))
    return result


def texts(body: dict) -> list[str]:
    """`text` as one string or a list of 1..100 strings."""
    value = body.get("text")
    if isinstance(value, list):
        if not value:
            raise invalid("text", "must contain at least one text")
        if len(value) > MAX_TEXTS:
            raise invalid("text", f"may hold at most {MAX_TEXTS} texts, got {len(value)}")
        return [text(item, f"text[{i}]") for i, item in enumerate(value)]
    if value is None:
        raise invalid("text", "is required: a text or a list of texts")
    return [text(value, "text")]
