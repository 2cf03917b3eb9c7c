"""The feeds file: derived streams and worker roles."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.errors import ConfigurationError
from app.core.feeds import Feed, derivation_source, derived_feeds, derived_streams_source, feeds_of_role, load_feeds
from app.core.settings import Settings


def test_the_shipped_feeds_name_the_three_derivations_from_the_transaction_feed():
    feeds = load_feeds(Settings())
    assert derivation_source(feeds).name == derived_streams_source(feeds).name == "transaction_stream"
    assert {d: f.name for d, f in derived_feeds(feeds).items()} == {
        "flatten": "transaction_flattened",
        "anonymize": "transaction_stream_anonymized",
        "blacklist": "transaction_stream_blacklisted",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"record": "transaction", "derivation": "flatten"}, "writes flattened_line records"),
        ({"record": "flattened_line", "derivation": "explode"}, "unknown derivation"),
        ({"record": "transaction", "derivation": "anonymize", "sinks": ["lake", "derived_streams"]},
         "not itself a derivation source"),
        ({"record": "flattened_line", "sinks": ["lake", "derived_streams"]}, "needs a feed of transaction records"),
        ({"table": "payment_method_totals", "dataset": "tables/payment_method_totals", "derivation": "flatten"},
         "no derivation"),
    ],
)
def test_a_derivation_must_fit_its_feed(fields, message):
    with pytest.raises(ValidationError, match=message):
        Feed(**{"name": "f", "topic": "t", "dataset": "streams/f", **fields})


def test_a_derivation_is_named_once(tmp_path: Path):
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(
        '[[feed]]\nname = "a"\ntopic = "A"\nrecord = "flattened_line"\ndataset = "streams/a"\nderivation = "flatten"\n'
        '[[feed]]\nname = "b"\ntopic = "B"\nrecord = "flattened_line"\ndataset = "streams/b"\nderivation = "flatten"\n'
    )
    with pytest.raises(ConfigurationError, match="one feed only"):
        load_feeds(Settings(), feeds)


def test_roles_split_stream_and_table_feeds():
    feeds = load_feeds(Settings())
    streams, tables = feeds_of_role(feeds, "streams"), feeds_of_role(feeds, "tables")
    assert [f.name for f in streams] == [f.name for f in feeds if not f.is_table] and len(streams) == 4
    assert [f.name for f in tables] == [f.name for f in feeds if f.is_table] and len(tables) == 4
    assert feeds_of_role(feeds, "all") == feeds
    with pytest.raises(ConfigurationError, match="unknown role"):
        feeds_of_role(feeds, "everything")


def test_stream_derivation_follows_the_table_derivation_unless_set():
    assert Settings().derives_streams
    assert not Settings(tables={"derive": False}).derives_streams
    assert Settings(tables={"derive": False}, streams={"derive": True}).derives_streams
    assert not Settings(streams={"derive": False}).derives_streams
    assert Settings(kafka={"group_id": "g"}).derived_streams_group == "g-derived-streams"
