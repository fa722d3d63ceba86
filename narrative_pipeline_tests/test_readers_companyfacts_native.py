"""The native companyfacts scanner (readers/_companyfacts_scan.c) on hostile input: truncated,
byte-flipped and randomly built documents are either read exactly as the reference path reads
them or declined (None), never a crash or a different result; and without the built module
(no compiler at install time) or with NARRATIVE_COMPANYFACTS_NATIVE=0 the reader takes its
pure-Python path and says so."""

from __future__ import annotations

import gzip
import json
import logging
import random
from pathlib import Path

import pytest

from narrative_pipeline.readers import companyfacts, companyfacts_native
from narrative_pipeline.readers.base import ReadResult
from narrative_pipeline_tests.test_readers_companyfacts_fast import (
    ODD,
    _read,
    assert_same,
    both,
    random_document,
    took_native_path,
)

INTERESTING = b'"\\{}[],: 0123456789-+.eEtfnul\x00\x1f\x7f\x80\xbf\xc3\xed\xf4\xff'


@pytest.fixture
def scan():
    if companyfacts_native.scanner() is None:
        pytest.skip("the native scanner is not built (no C compiler at install time)")
    return companyfacts_native.scanner().scan


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random damage: truncation, byte flip, deletion, insertion or a repeated slice."""
    i = rng.randrange(len(data))
    kind = rng.randrange(5)
    if kind == 0:
        return data[:i]
    if kind == 1:
        return data[:i] + bytes([rng.choice(INTERESTING)]) + data[i + 1 :]
    if kind == 2:
        return data[:i] + data[i + 1 :]
    if kind == 3:
        return data[:i] + bytes([rng.choice(INTERESTING)]) + data[i:]
    j = min(len(data), i + rng.randint(1, 40))
    return data[:j] + data[i:j] + data[j:]


def random_value(rng: random.Random, depth: int = 0) -> object:
    """Any JSON value, often of the wrong type for where it lands."""
    kind = rng.randrange(9 if depth < 3 else 6)
    scalars = [
        None,
        True,
        False,
        0,
        -0.0,
        1.5,
        2**53,
        2**53 + 1,
        -(2**63),
        1e308,
        5e-324,
        0.1,
        123456789.123456789,
        "2024-12-31",
        "é\u2028\U0001f600",
        'a\\"b',
        "",
    ]
    if kind < 6:
        return rng.choice(scalars)
    if kind < 8:
        return {rng.choice(["val", "accn", "end", "x", "units"]): random_value(rng, depth + 1)}
    return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def random_fact(rng: random.Random) -> object:
    if rng.random() < 0.05:
        return random_value(rng)
    fact: dict = {}
    for name in ("accn", "end", "start", "val", "fy", "fp", "form", "filed", "frame"):
        roll = rng.random()
        if roll < 0.7:  # plausible
            fact[name] = {
                "accn": rng.choice(["a1", "a2", "é"]),
                "end": rng.choice(["2024-12-31", "2023-12-31"]),
                "start": rng.choice(["2024-01-01", None]),
                "val": rng.choice([1, -2.5, 1e-7, 12345678901, 0.1 + 0.2, -0]),
            }.get(name, rng.choice([2024, "FY", "10-K", "2025-01-01"]))
        elif roll < 0.85:
            fact[name] = random_value(rng)
    return fact


def random_grammar_document(rng: random.Random) -> bytes:
    """A companyfacts-shaped document with random values at every level."""
    namespaces: dict = {}
    for ns in rng.sample(["us-gaap", "dei", "srt", "ifrs-full"], rng.randint(0, 3)):
        if rng.random() < 0.05:
            namespaces[ns] = random_value(rng)
            continue
        concepts: dict = {}
        for c in range(rng.randint(0, 4)):
            units = {
                u: [random_fact(rng) for _ in range(rng.randint(0, 5))]
                if rng.random() < 0.9
                else random_value(rng)
                for u in rng.sample(["USD", "usd", "shares", "€"], rng.randint(0, 3))
            }
            concepts[f"C{c}"] = {"label": "x", "units": units} if rng.random() < 0.9 else 5
        namespaces[ns] = concepts
    doc = {"cik": 1, "facts": namespaces, "entityName": random_value(rng)}
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
    return text.encode()


def check(data: bytes, taxonomy: set[str] | None, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Scanned documents read exactly as the reference; returns whether it was scanned. A
    declined one is read by the other paths, which must not raise either."""
    scanned = companyfacts_native.scan(data)
    if scanned is None:
        result = companyfacts.read_companyfacts_document(data, "fuzz", "T", taxonomy)
        assert isinstance(result, ReadResult) and (result.error is None) == bool(result.fact_count)
        return False
    public, reference = both(data, taxonomy, monkeypatch)
    assert_same(public, reference)
    return True


def test_damaged_documents_are_read_as_the_reference_or_declined(
    scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    bases = [random_document(rng) for _ in range(20)] + [ODD[n] for n in sorted(ODD)]
    scanned = 0
    for n in range(1500):
        data = mutate(rng.choice(bases), rng)
        scanned += check(data, None if n % 2 else {"C0", "C2", "A"}, monkeypatch)
    assert 100 < scanned < 1500  # both outcomes are exercised


def test_random_documents_are_read_as_the_reference_or_declined(
    scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    scanned = sum(check(random_grammar_document(rng), None, monkeypatch) for _ in range(400))
    assert 50 < scanned < 400


def test_a_damaged_real_document_is_read_as_the_reference_or_declined(
    scan, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sorted((shared_data / "companyfacts").glob("*.json.gz"))[0]
    data = gzip.decompress(path.read_bytes())
    rng = random.Random(3)
    scanned = sum(check(mutate(data, rng), None, monkeypatch) for _ in range(30))
    assert scanned > 0


SPECIAL = [b'\\"', b"\\u00e9", b"\x01", b"\x1f", b" ", b"\x7f", b"\xc3\xa9", b"\xff", b"\x80"]


def _one_fact_document(accn: bytes, key: bytes = b"accn") -> bytes:
    return b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"%s": "%s", "val": 1}]}}}}}' % (
        key,
        accn,
    )


def test_special_bytes_at_every_offset_of_a_word(scan, monkeypatch: pytest.MonkeyPatch) -> None:
    """string_token passes 8 bytes at a time: a quote, an escape, a control, a non-ASCII or an
    invalid byte at any offset of those words is seen exactly where it is."""
    outcomes = set()
    for offset in range(0, 18):
        for special in SPECIAL:
            for tail in (0, 9):
                accn = b"a" * offset + special + b"z" * tail
                for data in (_one_fact_document(accn), _one_fact_document(b"x", key=accn)):
                    outcomes.add(check(data, None, monkeypatch))
                    cut = data[: data.index(accn) + len(accn)]  # the string runs to the end
                    assert scan(cut) is None
    assert outcomes == {True, False}
    assert scan(_one_fact_document(b"a" * 9 + b"\xc3\xa9" + b"b"))[3] == ["a" * 9 + "\xe9b"]


def test_texts_differing_in_one_byte_get_their_own_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive facts' accn/end compared by 8-byte words (and hashed so): texts of every
    length up to 40 that differ in one byte only, at each position, are distinct texts."""
    facts = []
    for length in range(1, 41):
        for position in range(length):
            base = bytearray(b"0123456789" * 4)[:length]
            other = bytearray(base)
            other[position] = ord("x")
            for accn in (base, other, base):
                facts.append(b'{"accn": "%s", "end": "%s", "val": %d}' % (accn, other, len(facts)))
    data = b'{"facts": {"us-gaap": {"A": {"units": {"USD": [%s]}}}}}' % b",".join(facts)
    assert check(data, None, monkeypatch)
    scanned = companyfacts_native.scan(data)
    assert scanned is not None
    expected = {bytes(f.split(b'"')[3]) for f in facts}
    assert sorted(scanned.accn.texts) == sorted(t.decode() for t in expected)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,
        b'{"facts": {"us-gaap": {"A": {"units": {"USD": [' + b"[" * 100_000,
        b'{"facts": {"srt": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001 + b"}",
        b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"val": 1e99999999999, "accn": "a"}]}}}}}',
        b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"val": 1' + b"0" * 5000 + b"}]}}}}}",
        b'{"facts": {"us-gaap": {}}, "x": "\\ud800"}',
        b'{"facts": {"us-gaap": {}}, "x": "\xed\xa0\x80"}',
        b'{"facts": {"us-gaap": {}}, "x": "\xc0\xaf"}',
        b'{"facts": {"us-gaap": {}}, "x": "\\u12"}',
        b'{"facts": {"us-gaap": {}}, "x": "\xf0\x9f\x98"}',
        b'{"facts": {"us-gaap": {}}} x',
        b'{"facts": {"us-gaap": {}}, "facts": {}}',
        b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"val": 1, "val": 2}]}}}}}',
        b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"v\\u0061l": 1}]}}}}}',
        b"\xef\xbb\xbf" + b'{"facts": {}}',
        b"",
    ],
)
def test_hostile_input_is_declined(scan, data: bytes) -> None:
    assert scan(data) is None


def test_buffers_other_than_bytes_are_read_and_non_buffers_refused(scan) -> None:
    data = ODD["duplicates across forms and periods"]
    assert scan(bytearray(data))[1:] == scan(memoryview(data))[1:] == scan(data)[1:]
    with pytest.raises(TypeError):
        scan("text")


def test_without_the_built_module_the_pure_python_path_reads_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A machine without a compiler installs without the module: stand-in, a module name
    that does not exist."""
    data = ODD["duplicates across forms and periods"]
    expected = _read(data, None)
    monkeypatch.setattr(companyfacts_native, "MODULE", "narrative_pipeline.readers._absent")
    monkeypatch.setattr(companyfacts_native, "_state", {})
    calls = []
    monkeypatch.setattr(companyfacts, "parse_json", lambda d: calls.append(1) or json.loads(d))
    with caplog.at_level(logging.INFO, logger=companyfacts_native.__name__):
        got = _read(data, None)
    assert companyfacts_native.scanner() is None and calls == [1]
    assert "pure-Python path (native scanner not built" in caplog.text
    assert_same(got, expected)


def test_the_variable_turns_the_scanner_off(
    scan, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = ODD["duplicates across forms and periods"]
    assert took_native_path(data)
    monkeypatch.setenv(companyfacts_native.ENV, "0")
    monkeypatch.setattr(companyfacts_native, "_state", {})
    with caplog.at_level(logging.INFO, logger=companyfacts_native.__name__):
        assert companyfacts_native.scan(data) is None
    assert f"pure-Python path ({companyfacts_native.ENV}=0)" in caplog.text
