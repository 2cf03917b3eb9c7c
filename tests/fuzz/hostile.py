"""Hypothesis strategies for hostile Kafka values: a valid ksqlDB record, then broken on purpose.

:func:`hostile_values` draws the raw bytes of one message: sometimes pure garbage (random bytes,
invalid UTF-8), mostly a record of the feed's kind whose text is full of edge cases (NUL,
lone surrogates, RTL overrides, emoji, combining marks, SQL metacharacters), whose numbers
are NaN, infinite, negative or huge, whose dates are far in the past or future, nested very
deeply, or whose schema drifted (fields added, dropped, renamed, retyped), serialised as JSON
with or without ASCII escapes.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime

from hypothesis import strategies as st

EDGE_TEXT = [
    "\x00", "a\x00b", "\ud800", "\udfff", "\u202eevil\u202c", "\u200f\u05e9\u05dc\u05d5\u05dd", "👩‍👩‍👧‍👦", "🇫🇷",
    "e\u0301\u0301\u0301", "\ufeff", "\u2028\u2029", "Ω≈ç√", "ß", "İ", "ＡＢＣ", "' OR '1'='1", "'; DROP TABLE dim_users; --",
    "\\", '"', "%s", "%(name)s", "`", "\n\r\t", " ", "  padded  ", "NULL", "null", "0x27",
]
NUMBERS = [math.nan, math.inf, -math.inf, -1, -1e300, 0, -0.0, 1e300, 1e-320, 2**53 + 1, 2**63, -(2**63) - 1, 1.5]
DATES = [
    "0001-01-01T00:00:00Z", "1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z", "2200-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59Z", "2026-02-30T00:00:00Z", "2026-11-26T00:00:00.123456789+14:00", "2026-11-26",
    -62135596800000, 0, 253402300799999, 10**20, "yesterday",
]

_NEST_MARK = "[nest {depth}]"

text = st.one_of(st.sampled_from(EDGE_TEXT), st.text(max_size=40), st.text(st.characters(codec="utf-8"), max_size=12))
identifier = st.one_of(text.filter(lambda s: 0 < len(s) <= 64), st.from_regex(r"[A-Za-z0-9-]{1,16}", fullmatch=True))
amount = st.one_of(st.sampled_from(NUMBERS), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**15), 10**15))
quantity = st.one_of(st.integers(-5, 5), st.sampled_from([0, -1, 1_000_000, 1_000_001, 2**31, 2.0])  )
stamp = st.one_of(st.sampled_from(DATES), st.datetimes().map(lambda d: d.isoformat() + "Z"))


# Plausible values: valid for the schema, hostile only in their text (most of them are accepted).
some_text = st.one_of(st.sampled_from(EDGE_TEXT), st.text(min_size=1, max_size=40)).filter(lambda s: 0 < len(s) <= 64)
finite_amount = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)
valid_stamp = st.datetimes(datetime(1970, 1, 1), datetime(2200, 12, 31)).map(lambda d: d.isoformat() + "Z")
email = st.tuples(some_text, some_text).map(lambda parts: parts[0].replace("@", "") + "@" + parts[1].replace("@", "")).filter(lambda e: 3 <= len(e) <= 320 and e.count("@") == 1 and not e.startswith("@") and not e.endswith("@"))


@st.composite
def _product(draw, plausible: bool):
    return {
        "ID": draw(some_text if plausible else identifier), "NAME": draw(some_text if plausible else text),
        "CATEGORY": draw(some_text if plausible else text),
        "PRICE": draw(st.floats(0, 1e9) if plausible else amount), "QUANTITY": draw(st.integers(1, 1000) if plausible else quantity),
    }


@st.composite
def transaction_document(draw, blacklisted: bool = False, plausible: bool = False) -> dict:
    """A transaction as ksqlDB writes it, its values drawn from the hostile pools (``plausible``: valid values, hostile text)."""
    word = some_text if plausible else text
    ident = some_text if plausible else identifier
    doc = {
        "TRANSACTION_ID": draw(ident),
        "USER": {
            "ID": draw(ident), "NAME": draw(word), "EMAIL": draw(email if plausible else st.one_of(text, st.emails(), text.map(lambda s: s + "@x"))),
            "COUNTRY": draw(word), "CITY": draw(word),
        },
        "AMOUNT": draw(finite_amount if plausible else amount),
        "CURRENCY": draw(st.sampled_from(["EUR", "USD"] if plausible else ["EUR", "USD", "eur", "EURO", ""])),
        "TRANSACTION_TYPE": draw(st.sampled_from(["PURCHASE", "REFUND"] if plausible else ["PURCHASE", "A B", "x" * 33])),
        "PAYMENT_METHOD": {"ID": draw(ident), "NAME": draw(word), "CATEGORY": draw(word)},
        "PRODUCTS": draw(st.lists(_product(plausible), min_size=1 if plausible else 0, max_size=3)),
        "STATUS": draw(st.sampled_from(["COMPLETED", "PENDING"] if plausible else ["COMPLETED", "💥"])),
        "EVENT_TIMESTAMP": draw(valid_stamp if plausible else stamp),
    }
    if blacklisted:
        doc["BLACKLIST_REASON"] = draw(text)
    return doc


def _paths(doc, prefix=()):
    for key, value in doc.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


@st.composite
def drifted(draw, doc: dict) -> dict:
    """Schema drift: a few fields added, dropped, renamed or retyped; or deep nesting somewhere."""
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["drop", "rename", "lower", "retype", "extra", "nest"]))
        if action == "drop":
            parent.pop(key, None)
        elif action == "rename":
            parent[key + "_V2"] = parent.pop(key, None)
        elif action == "lower":
            parent[key.lower()] = parent.pop(key, None)
        elif action == "retype":
            parent[key] = draw(st.one_of(st.none(), st.booleans(), st.integers(), text, st.lists(st.integers(), max_size=2), st.just({})))
        elif action == "extra":
            parent[draw(text)] = draw(st.one_of(text, amount, st.just({"NESTED": [1, {"X": None}]})))
        else:
            parent[key] = _NEST_MARK.format(depth=draw(st.sampled_from([50, 500, 5000, 100_000])))
    return doc


def _serialise(doc: dict, ascii_only: bool) -> bytes:
    # allow_nan: NaN/Infinity tokens on the wire, as a sloppy producer writes them. Lone surrogates
    # become \\udXXX escapes with ascii_only, invalid UTF-8 bytes without (surrogatepass).
    text = json.dumps(doc, ensure_ascii=ascii_only, allow_nan=True)
    # Deep nesting is spliced in as text: json.dumps itself would overflow the stack.
    text = re.sub(r'"\[nest (\d+)\]"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def hostile_values(draw, record: str = "transaction") -> bytes:
    """The raw value of one hostile message for a feed of kind ``record``."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return draw(st.sampled_from([b"", b"null", b"[]", b'"x"', b"{", b"\xff\xfe{}", b"{}" + b"\x00", b"1e999", b"{" * 10000]))
    doc = draw(transaction_document(blacklisted=record == "blacklisted_transaction", plausible=choice <= 5))
    if choice >= 8:
        doc = draw(drifted(doc))
    return _serialise(doc, draw(st.booleans()))
