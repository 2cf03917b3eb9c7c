"""Seeded demo and load generator: realistic transactions, and a producer writing the 4 streams.

`generate` makes transactions the way the shop behind ksqlDB would: a pool of users whose names
are in their own script (accents, CJK, Cyrillic, Arabic, the odd emoji) with matching country,
city and currency; a fixed catalogue of products and payment methods; mostly increasing event
times over the last days with a share of late arrivals; and users who now and then move city or
change e-mail, so "latest event wins" in the user dimension can be seen. Same arguments, same
output, byte for byte.

`produce` writes each transaction and what ksqlDB would derive from it (flattened lines,
anonymised copy, blacklisted copy) to the four stream topics, so the worker can be fed without
ksqlDB -- or, where the worker derives the three streams itself (`streams.derive`), only the
transactions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate, islice
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from models.derive import Blacklist, anonymize, blacklisted, flatten
from models.transaction import (
    PaymentMethod,
    Product,
    Record,
    Transaction,
    User,
    construct_trusted,
    to_wire,
)

__all__ = ["ProduceReport", "StreamTopics", "generate", "produce"]

logger = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY", "SEK")


@dataclass(frozen=True)
class _Place:
    """A country of the user pool: its currency, cities, e-mail domains and names.

    Names are (as written, ASCII for the e-mail) pairs; `family_first` writes the family name
    first without a space (Japanese and Chinese order).
    """

    country: str
    weight: int
    currency: str
    cities: tuple[str, ...]
    domains: tuple[str, ...]
    given: tuple[tuple[str, str], ...]
    family: tuple[tuple[str, str], ...]
    family_first: bool = False


_PLACES = (
    _Place("FR", 14, "EUR", ("Paris", "Lyon", "Marseille", "Toulouse"), ("example.fr", "courriel.example"),
           (("Zoë", "zoe"), ("Hélène", "helene"), ("François", "francois"), ("Jérôme", "jerome"), ("Amélie", "amelie")),
           (("Dupont", "dupont"), ("Lefèvre", "lefevre"), ("Brûlé", "brule"), ("Moreau", "moreau"))),
    _Place("DE", 12, "EUR", ("Berlin", "München", "Hamburg", "Köln"), ("example.de", "post.example"),
           (("Jürgen", "juergen"), ("Lukas", "lukas"), ("Anneliese", "anneliese"), ("Jörg", "joerg")),
           (("Müller", "mueller"), ("Schröder", "schroeder"), ("Weiß", "weiss"), ("Becker", "becker"))),
    _Place("ES", 8, "EUR", ("Madrid", "Barcelona", "Sevilla", "València"), ("example.es",),
           (("José", "jose"), ("María", "maria"), ("Iñigo", "inigo"), ("Lucía", "lucia")),
           (("García", "garcia"), ("Núñez", "nunez"), ("Peña", "pena"), ("Ortiz", "ortiz"))),
    _Place("US", 18, "USD", ("New York", "San Francisco", "Chicago", "Austin"), ("example.com", "mail.example"),
           (("James", "james"), ("Emily", "emily"), ("Aaliyah", "aaliyah"), ("Chloé", "chloe")),
           (("Smith", "smith"), ("Johnson", "johnson"), ("O'Connor", "oconnor"), ("Nguyen", "nguyen"))),
    _Place("GB", 10, "GBP", ("London", "Manchester", "Edinburgh", "Bristol"), ("example.co.uk",),
           (("Oliver", "oliver"), ("Amelia", "amelia"), ("Siobhán", "siobhan"), ("Rhys", "rhys")),
           (("Taylor", "taylor"), ("Brown", "brown"), ("Ó Ceallaigh", "oceallaigh"), ("Patel", "patel"))),
    _Place("CH", 6, "CHF", ("Zürich", "Genève", "Basel", "Lausanne"), ("example.ch",),
           (("Luca", "luca"), ("Noémie", "noemie"), ("Ursula", "ursula"), ("Gian", "gian")),
           (("Keller", "keller"), ("Favre", "favre"), ("Brunner", "brunner"), ("Grünig", "gruenig"))),
    _Place("JP", 8, "JPY", ("Tokyo", "Osaka", "Kyoto", "Sapporo"), ("example.jp",),
           (("翔太", "shota"), ("陽菜", "hina"), ("蓮", "ren"), ("さくら", "sakura")),
           (("佐藤", "sato"), ("鈴木", "suzuki"), ("高橋", "takahashi"), ("田中", "tanaka")), True),
    _Place("CN", 6, "USD", ("北京", "上海", "深圳", "成都"), ("example.cn",),
           (("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("磊", "lei")),
           (("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu")), True),
    _Place("SE", 6, "SEK", ("Stockholm", "Göteborg", "Malmö", "Uppsala"), ("example.se",),
           (("Björn", "bjorn"), ("Åsa", "asa"), ("Linnéa", "linnea"), ("Maja", "maja")),
           (("Ångström", "angstrom"), ("Söderberg", "soderberg"), ("Lindqvist", "lindqvist"), ("Berg", "berg"))),
    _Place("RU", 6, "EUR", ("Москва", "Санкт-Петербург", "Казань", "Новосибирск"), ("example.ru",),
           (("Алексей", "aleksey"), ("Наталья", "natalya"), ("Дмитрий", "dmitry"), ("Ольга", "olga")),
           (("Иванов", "ivanov"), ("Петров", "petrov"), ("Соколов", "sokolov"), ("Кузнецов", "kuznetsov"))),
    _Place("AE", 6, "USD", ("دبي", "أبو ظبي", "الشارقة"), ("example.ae",),
           (("محمد", "mohamed"), ("فاطمة", "fatima"), ("أحمد", "ahmed"), ("ليلى", "layla")),
           (("العلي", "alali"), ("حسن", "hassan"), ("منصور", "mansour"), ("الخطيب", "alkhatib"))),
)
_EMOJI = ("🌸", "🚀", "⚽", "🎧")

_PAYMENT_METHODS = tuple(
    PaymentMethod(id=f"PM-{number}", name=name, category=category)
    for number, (name, category) in enumerate(
        (("VISA", "CARD"), ("MASTERCARD", "CARD"), ("AMEX", "CARD"), ("PAYPAL", "WALLET"),
         ("SEPA", "BANK_TRANSFER"), ("APPLE_PAY", "WALLET"), ("GOOGLE_PAY", "WALLET"),
         ("IDEAL", "BANK_TRANSFER")),
        start=1,
    )
)
_PAYMENT_CUM_WEIGHTS = tuple(accumulate((30, 22, 6, 14, 8, 10, 6, 4)))

_CATALOGUE = (  # (category, name, price)
    ("ELECTRONICS", "Wireless headphones", 89.99), ("ELECTRONICS", "USB-C charger 65 W", 34.5),
    ("ELECTRONICS", "Mechanical keyboard", 129.0), ("ELECTRONICS", "4K monitor 27″", 349.99),
    ("ELECTRONICS", "E-reader", 119.99), ("ELECTRONICS", "Bluetooth speaker", 59.9),
    ("ELECTRONICS", "Smartwatch", 249.0), ("BOOKS", "Les Misérables", 12.9),
    ("BOOKS", "Война и мир", 15.5), ("BOOKS", "ノルウェイの森", 9.8), ("BOOKS", "Don Quijote", 11.95),
    ("BOOKS", "Designing Data-Intensive Applications", 44.99), ("BOOKS", "Cookbook: Crème brûlée", 24.0),
    ("GROCERY", "Café en grains 1 kg", 18.5), ("GROCERY", "Matcha 100 g", 21.0),
    ("GROCERY", "Olive oil 1 l", 9.75), ("GROCERY", "Dark chocolate 85 %", 3.2),
    ("GROCERY", "Basmati rice 5 kg", 14.99), ("GROCERY", "Earl Grey tea", 6.5),
    ("CLOTHING", "Merino sweater", 79.0), ("CLOTHING", "Rain jacket", 119.0),
    ("CLOTHING", "Running socks (3 pairs)", 15.99), ("CLOTHING", "Denim jeans", 69.5),
    ("CLOTHING", "Wool scarf", 29.0), ("CLOTHING", "Sneakers", 99.95),
    ("HOME", "Cast-iron pan", 54.0), ("HOME", "Espresso machine", 399.0),
    ("HOME", "Linen bed sheets", 89.0), ("HOME", "LED desk lamp", 39.99),
    ("HOME", "Ceramic mug set", 24.5), ("HOME", "Kitchen knife", 64.0),
    ("BEAUTY", "Sunscreen SPF 50", 16.9), ("BEAUTY", "Shampoo 500 ml", 8.99),
    ("BEAUTY", "Electric toothbrush", 49.99), ("BEAUTY", "Hand cream", 7.5),
    ("BEAUTY", "Perfume 50 ml", 72.0), ("SPORTS", "Yoga mat", 29.99),
    ("SPORTS", "Football", 24.99), ("SPORTS", "Cycling helmet", 59.0),
    ("SPORTS", "Dumbbells 2×5 kg", 39.0), ("SPORTS", "Water bottle", 12.0),
    ("SPORTS", "Tennis racket", 139.0), ("TOYS", "Building bricks set", 49.99),
    ("TOYS", "Puzzle 1000 pieces", 17.99), ("TOYS", "Plush bear", 19.5),
    ("TOYS", "Board game", 34.9), ("TOYS", "Remote-control car", 44.0),
    ("TOYS", "Kite", 22.0), ("GROCERY", "Maple syrup", 11.4), ("HOME", "Houseplant 🌿", 19.99),
)
_QUANTITIES = (1, 1, 1, 1, 1, 2, 2, 3, 4, 5)
_TRANSACTION_TYPES = ((0.85, "PURCHASE"), (0.95, "REFUND"), (1.0, "TRANSFER"))  # cumulative
_STATUSES = ((0.88, "COMPLETED"), (0.96, "PENDING"), (1.0, "FAILED"))
_CHANGE_FRACTION = 0.005  # share of transactions after which their user moves or changes e-mail
_HOME_CURRENCY_FRACTION = 0.9


def _catalogue_entry(index: int) -> tuple[str, str, float]:
    """Product ``index`` of a catalogue of any size: the first 50 are the demo's, the others variants
    of them (``"Yoga mat · 7"``) with prices spread between half and one and a half times theirs."""
    category, name, price = _CATALOGUE[index % len(_CATALOGUE)]
    variant = index // len(_CATALOGUE)
    if variant == 0:
        return category, name, price
    return category, f"{name} · {variant}", round(price * (0.5 + (index * 7919 % 101) / 100), 2)


def _pick(cumulative: tuple[tuple[float, str], ...], draw: float) -> str:
    for bound, value in cumulative:
        if draw < bound:
            return value
    return cumulative[-1][1]


class _UserPool:
    """The users of one generation run; each may move city or change e-mail along the way."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self._rng = rng
        self._places = rng.choices(_PLACES, weights=[place.weight for place in _PLACES], k=size)
        self._handles: list[str] = []
        self.users: list[User] = []
        for number, place in enumerate(self._places, start=1):
            given, family = rng.choice(place.given), rng.choice(place.family)
            name = f"{family[0]}{given[0]}" if place.family_first else f"{given[0]} {family[0]}"
            if rng.random() < 0.02:
                name = f"{name} {rng.choice(_EMOJI)}"
            self._handles.append(f"{given[1]}.{family[1]}")
            self.users.append(
                User(
                    id=f"U{number:05d}",
                    name=name,
                    email=f"{self._handles[-1]}.{number}@{rng.choice(place.domains)}",
                    country=place.country,
                    city=rng.choice(place.cities),
                )
            )

    def place(self, index: int) -> _Place:
        return self._places[index]

    def change(self, index: int) -> None:
        """The user moves to another city of their country, or changes e-mail address."""
        user, place, rng = self.users[index], self._places[index], self._rng
        if rng.random() < 0.5 and len(place.cities) > 1:
            city = rng.choice([city for city in place.cities if city != user.city])
            update = {"city": city}
        else:
            handle, domain = self._handles[index], rng.choice(place.domains)
            update = {"email": f"{handle}.{rng.randrange(10_000)}@{domain}"}
        self.users[index] = user.model_copy(update=update)


def generate(
    count: int,
    *,
    seed: int,
    now: datetime,
    days: int = 3,
    late_fraction: float = 0.05,
    users: int = 500,
    products: int = len(_CATALOGUE),
) -> Iterator[Transaction]:
    """Yield `count` transactions, the same ones for the same arguments.

    `users` and `products` set the key cardinality of the tables (the demo's 500 users and 50
    products by default; a production-like load has 100,000 users and 10,000 products).

    Event times are spread evenly over the `days` days ending at `now` and never decrease,
    except for a `late_fraction` of late arrivals: those take a time within the 24 hours before
    the UTC midnight that starts the current event's day, so they belong to a day partition
    that was already written (and, on the first day, to the day before the window). Ids are
    `TX-<seed>-<n>`; users `U00001`…; amounts are the sum of the lines, rounded to cents.
    """
    if count < 0 or days < 1 or users < 1 or products < 1 or not 0 <= late_fraction <= 1:
        raise ValueError("need count >= 0, days >= 1, users >= 1, products >= 1, 0 <= late_fraction <= 1")
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data from a seed, not a secret
    pool = _UserPool(rng, users)
    catalogue = products
    made: dict[tuple[int, int], Product] = {}
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    end_ms = (now - _EPOCH) // timedelta(milliseconds=1)
    span_ms = days * _DAY_MS
    start_ms = end_ms - span_ms
    random_, randrange = rng.random, rng.randrange
    for n in range(count):
        index = randrange(users)
        user, place = pool.users[index], pool.place(index)
        lines = []
        for _ in range(1 if random_() < 0.6 else randrange(2, 4)):
            key = (randrange(catalogue), _QUANTITIES[randrange(len(_QUANTITIES))])
            product = made.get(key)
            if product is None:
                category, name, price = _catalogue_entry(key[0])
                product = made[key] = construct_trusted(
                    Product, id=f"P-{key[0] + 1:03d}", name=name, category=category,
                    price=price, quantity=key[1],
                )
            lines.append(product)
        event_ms = start_ms + int(span_ms * (n + random_()) / count)
        if random_() < late_fraction:
            event_ms = event_ms - event_ms % _DAY_MS - randrange(1, _DAY_MS)
        currency = place.currency if random_() < _HOME_CURRENCY_FRACTION else _CURRENCIES[randrange(6)]
        yield construct_trusted(
            Transaction,
            transaction_id=f"TX-{seed}-{n}",
            user=user,
            amount=round(sum(product.price * product.quantity for product in lines), 2),
            currency=currency,
            transaction_type=_pick(_TRANSACTION_TYPES, random_()),
            payment_method=rng.choices(_PAYMENT_METHODS, cum_weights=_PAYMENT_CUM_WEIGHTS)[0],
            products=lines,
            status=_pick(_STATUSES, random_()),
            event_timestamp=_EPOCH + timedelta(milliseconds=event_ms),
        )
        if random_() < _CHANGE_FRACTION:
            pool.change(index)


@dataclass(frozen=True)
class StreamTopics:
    """The Kafka topics behind ksqlDB's four transaction streams."""

    transactions: str
    flattened: str
    anonymized: str
    blacklisted: str


@dataclass
class ProduceReport:
    """What `produce` delivered: messages acknowledged per topic, and the wall time it took."""

    counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


_CHUNK = 1000
_BATCHES_IN_FLIGHT = 64
_LINGER_MS = 20
_MAX_BATCH_SIZE = 256 * 1024


async def produce(
    bootstrap_servers: str,
    topics: StreamTopics,
    count: int,
    *,
    seed: int = 42,
    rate: float | None = None,
    anonymization_key: bytes,
    blacklist: Blacklist,
    days: int = 3,
    late_fraction: float = 0.05,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    client_options: Mapping[str, Any] | None = None,
    users: int = 500,
    products: int = len(_CATALOGUE),
    derived: bool = True,
) -> ProduceReport:
    """Write `count` generated transactions and, with `derived`, their derived records to the four topics.

    Without `derived` only the transaction topic is written: the worker derives the three streams
    itself (`streams.derive`), as it would from a shop's own producer.

    Every message is keyed by its transaction id (UTF-8, ksqlDB's KAFKA key format) and valued
    by `to_wire`; it goes to the partition Kafka's default partitioner picks for that key
    (murmur2). `rate` caps transactions per second (checked once per chunk of transactions),
    None means as fast as possible. The producer is idempotent with `acks="all"`; this returns
    only once every message is acknowledged, and raises the first delivery error (a
    KafkaError) otherwise. `progress` gets the running number of transactions handed to the
    producer, after each chunk. `client_options` (`app.core.security.kafka_client_options`) replace
    `bootstrap_servers` when the cluster needs TLS or SASL. `users` and `products` go to `generate`.

    Messages are appended to one record batch per topic-partition (aiokafka's batch API)
    rather than sent one by one: per-message `send` costs more than making the messages.
    """
    chunk = _CHUNK if rate is None else max(1, min(_CHUNK, int(rate / 10)))
    counts = dict.fromkeys(
        (topics.transactions, topics.flattened, topics.anonymized, topics.blacklisted) if derived else (topics.transactions,),
        0,
    )
    producer = AIOKafkaProducer(
        **(client_options or {"bootstrap_servers": bootstrap_servers}),
        acks="all",
        enable_idempotence=True,
        linger_ms=_LINGER_MS,
        max_batch_size=_MAX_BATCH_SIZE,
    )
    started = time.monotonic()
    await producer.start()
    try:
        outbox = _Outbox(producer, {topic: await producer.partitions_for(topic) for topic in counts})
        transactions = generate(
            count, seed=seed, now=now or datetime.now(UTC), days=days, late_fraction=late_fraction,
            users=users, products=products,
        )
        sent = 0
        while sent < count:
            size = min(chunk, count - sent)
            for tx in islice(transactions, size):
                key = tx.transaction_id.encode()
                slot = murmur2(key) & 0x7FFFFFFF
                for topic, record in _stream_records(tx, topics, anonymization_key, blacklist, derived):
                    await outbox.append(topic, slot, key, to_wire(record))
                    counts[topic] += 1
            sent += size
            await outbox.send_all()
            if progress is not None:
                progress(sent)
            if rate is not None:
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        await outbox.delivered()
    finally:
        await producer.stop()
    return ProduceReport(counts=counts, elapsed_s=time.monotonic() - started)


class _Outbox:
    """Open record batches per topic-partition, and the deliveries of those already sent."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, set[int]]) -> None:
        self._producer = producer
        self._partitions = {topic: sorted(ids) for topic, ids in partitions.items()}
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._in_flight: deque[asyncio.Future] = deque()

    async def append(self, topic: str, slot: int, key: bytes, value: bytes) -> None:
        """Add a message to the open batch of partition `slot mod partitions` of `topic`."""
        partitions = self._partitions[topic]
        where = (topic, partitions[slot % len(partitions)])
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            # full: send it and start the next one (a batch always takes its first message)
            await self._send(where, batch)
            batch = self._open[where] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)

    async def send_all(self) -> None:
        """Hand every open batch to the producer."""
        open_batches, self._open = self._open, {}
        for where, batch in open_batches.items():
            await self._send(where, batch)

    async def delivered(self) -> None:
        """Wait until every batch handed over is acknowledged; raise the first failure."""
        await self.send_all()
        while self._in_flight:
            await self._in_flight.popleft()

    async def _send(self, where: tuple[str, int], batch: BatchBuilder) -> None:
        self._in_flight.append(await self._producer.send_batch(batch, where[0], partition=where[1]))
        while len(self._in_flight) > _BATCHES_IN_FLIGHT:
            await self._in_flight.popleft()


def _stream_records(
    tx: Transaction, topics: StreamTopics, key: bytes, blacklist: Blacklist, derived: bool = True
) -> Iterator[tuple[str, Record]]:
    """What ksqlDB's four streams hold for one transaction, topic by topic (the first only without `derived`)."""
    yield topics.transactions, tx
    if not derived:
        return
    for line in flatten(tx):
        yield topics.flattened, line
    yield topics.anonymized, anonymize(tx, key)
    flagged = blacklisted(tx, blacklist)
    if flagged is not None:
        yield topics.blacklisted, flagged
