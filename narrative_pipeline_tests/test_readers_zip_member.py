"""readers/zip_member.py: a zip member read whole (one pread, one inflate, CRC-32) gives the
bytes zipfile's streaming reader gives, with zlib and with ISA-L, and fails where zipfile
fails (naming the member); members it does not handle go through zipfile itself."""

from __future__ import annotations

import io
import logging
import os
import random
import zipfile
import zlib
from pathlib import Path

import pytest

from narrative_pipeline.readers import zip_member
from narrative_pipeline.readers.companyfacts import read_companyfacts
from narrative_pipeline.readers.limits import InputTooLarge

try:
    from isal import isal_zlib
except ImportError:  # the optional dependency is absent: only zlib is tested
    isal_zlib = None

BACKENDS = [
    pytest.param(zlib, id="zlib"),
    pytest.param(
        isal_zlib,
        id="isal",
        marks=pytest.mark.skipif(isal_zlib is None, reason="the isal package is not installed"),
    ),
]
BIG = 1 << 30
SCALE_001 = Path("/work/bench-data/13w/scale_0.01/companyfacts.zip")


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """read_member with this inflate module (the choice `inflater()` would make)."""
    monkeypatch.setitem(zip_member._state, "module", request.param)
    return request.param


def _document(seed: int, size: int) -> bytes:
    """JSON-like text that compresses as companyfacts does (repeats, digits)."""
    rng = random.Random(seed)
    parts = [b'{"facts":{"us-gaap":{']
    while sum(map(len, parts)) < size:
        parts.append(
            b'{"end":"20%02d-%02d-30","val":%d,"accn":"0000%06d-%02d-%06d","form":"10-K"},'
            % (
                rng.randrange(100),
                rng.randrange(1, 13),
                rng.randrange(10**12),
                *rng.sample(range(10**6), 3),
            )
        )
    return b"".join(parts)[:size]


def _zip(path: Path, members: dict[str, bytes], **kwargs) -> Path:
    with zipfile.ZipFile(path, "w", **kwargs) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _streamed(path: Path) -> dict[str, bytes | type]:
    """Each member as zipfile's reader gives it, or the class of the error it raises."""
    out: dict[str, bytes | type] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            try:
                out[info.filename] = archive.read(info)
            except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                out[info.filename] = type(exc)
    return out


def _whole(path: Path, limit: int = BIG) -> dict[str, bytes | type]:
    """Each member as read_member gives it, or the class of the error it raises."""
    out: dict[str, bytes | type] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            try:
                out[info.filename] = zip_member.read_member(archive, info, "src", limit)
            except (zipfile.BadZipFile, EOFError) as exc:
                out[info.filename] = type(exc)
    return out


MEMBERS = {
    "CIK0000000001.json": _document(1, 300_000),
    "CIK0000000002.json": _document(2, 1),
    "empty.json": b"",
    "dir/CIK0000000003.json": _document(3, 70_000),
    "naïve-ütf8.json": _document(4, 5_000),
    "random.bin": random.Random(5).randbytes(200_000),  # incompressible: stored blocks
}


@pytest.mark.parametrize("level", [1, 6, 9])
def test_deflated_members_read_as_zipfile_reads_them(tmp_path, backend, level):
    path = _zip(tmp_path / "a.zip", MEMBERS, compression=zipfile.ZIP_DEFLATED, compresslevel=level)
    assert _whole(path) == _streamed(path) == MEMBERS


def test_stored_members_and_data_descriptors(tmp_path, backend):
    stored = _zip(tmp_path / "s.zip", MEMBERS, compression=zipfile.ZIP_STORED)
    assert _whole(stored) == MEMBERS
    # Written to an unseekable stream: sizes and CRC after the data (flag bit 3).
    buffer = io.BytesIO()
    unseekable = type("Unseekable", (), {"write": buffer.write, "flush": lambda self: None})()
    with zipfile.ZipFile(unseekable, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in MEMBERS.items():
            with archive.open(name, "w") as out:
                out.write(data)
    path = tmp_path / "d.zip"
    path.write_bytes(buffer.getvalue())
    with zipfile.ZipFile(path) as archive:
        assert all(info.flag_bits & 0x8 for info in archive.infolist())
    assert _whole(path) == MEMBERS


@pytest.mark.skipif(not SCALE_001.exists(), reason=f"{SCALE_001} absent (benchmark archive)")
def test_bulk_archive_members_identical_with_both_backends(monkeypatch):
    with zipfile.ZipFile(SCALE_001) as archive:
        infos = archive.infolist()[:: max(1, len(archive.infolist()) // 20)]
        for info in infos:
            expected = archive.read(info)
            for module in (zlib, isal_zlib):
                if module is not None:
                    monkeypatch.setitem(zip_member._state, "module", module)
                    assert zip_member.read_member(archive, info, "s", BIG) == expected


def _data_start(path: Path, name: str) -> tuple[int, int]:
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    header = path.read_bytes()[info.header_offset : info.header_offset + 30]
    fields = zip_member.LOCAL_HEADER.unpack(header)
    return info.header_offset + 30 + fields[-2] + fields[-1], info.compress_size


def _damage(path: Path, offset: int, count: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _break_deflate(path: Path, name: str) -> None:
    """Damage the member's deflate stream where zlib refuses it (not merely a wrong CRC)."""
    start, size = _data_start(path, name)
    raw = path.read_bytes()[start : start + size]
    for at in range(size // 3, size, 97):
        damaged = bytearray(raw)
        damaged[at : at + 30] = bytes(b ^ 0x5A for b in damaged[at : at + 30])
        try:
            zlib.decompress(bytes(damaged), -15)
        except zlib.error:
            return _damage(path, start + at, 30)
    data = bytearray(path.read_bytes())  # no such spot: the first block's type is invalid
    data[start] |= 0x06
    path.write_bytes(bytes(data))


def test_damaged_deflate_data_fails_naming_the_member(tmp_path, backend):
    path = _zip(tmp_path / "a.zip", MEMBERS, compression=zipfile.ZIP_DEFLATED)
    _break_deflate(path, "CIK0000000001.json")
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("CIK0000000001.json")
        with pytest.raises(zipfile.BadZipFile, match="CIK0000000001.json"):
            zip_member.read_member(archive, info, "s", BIG)
        with pytest.raises(zipfile.BadZipFile, match="CIK0000000001.json: damaged deflate"):
            zip_member.read_streamed(archive, info, "s", BIG)  # zipfile alone: zlib.error
    whole, streamed = _whole(path), _streamed(path)
    assert whole.pop("CIK0000000001.json") is zipfile.BadZipFile
    assert streamed.pop("CIK0000000001.json") in (zipfile.BadZipFile, zlib.error)
    assert whole == streamed


def test_wrong_crc_fails_as_zipfile_fails(tmp_path, backend):
    path = _zip(tmp_path / "a.zip", MEMBERS, compression=zipfile.ZIP_STORED)
    start, size = _data_start(path, "dir/CIK0000000003.json")
    _damage(path, start + size - 10, 1)  # stored: the bytes inflate fine, the CRC differs
    whole = _whole(path)
    assert whole["dir/CIK0000000003.json"] is zipfile.BadZipFile
    assert whole == _streamed(path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("dir/CIK0000000003.json")
        with pytest.raises(
            zipfile.BadZipFile, match=r"Bad CRC-32 for file 'dir/CIK0000000003.json'"
        ):
            zip_member.read_member(archive, info, "s", BIG)


def test_truncated_archive_fails(tmp_path, backend):
    path = _zip(tmp_path / "a.zip", MEMBERS, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("CIK0000000001.json")
        # The file shrinks under the open archive: the member's bytes end early.
        os.truncate(path, info.header_offset + 30 + len(info.filename) + 1000)
        with pytest.raises(EOFError, match="CIK0000000001.json"):
            zip_member.read_member(archive, info, "s", BIG)


def test_declared_size_over_the_cap_is_refused_before_reading(tmp_path, monkeypatch):
    path = _zip(tmp_path / "a.zip", MEMBERS, compression=zipfile.ZIP_DEFLATED)
    reads: list[int] = []
    monkeypatch.setattr(os, "pread", lambda fd, n, at: reads.append(n) or b"")
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("CIK0000000001.json")
        with pytest.raises(InputTooLarge, match="NARRATIVE_MAX_DOCUMENT_MB"):
            zip_member.read_member(archive, info, "s", 1000)
    assert reads == []


def test_a_lying_declared_size_keeps_at_most_that_size(tmp_path, backend):
    """The directory says fewer bytes than the member holds: at most one more is inflated and
    the declared number kept (as zipfile's reader keeps), which then fail the CRC."""
    path = _zip(tmp_path / "a.zip", MEMBERS, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("CIK0000000001.json")
        raw = path.read_bytes()[_data_start(path, info.filename)[0] :][: info.compress_size]
        info.file_size = 1000
        assert len(zip_member.inflate(raw, info, backend)) == 1000
        info.file_size = len(MEMBERS[info.filename]) - 10  # still read whole, then checked
        assert zip_member._handled(info)
        with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
            zip_member.read_member(archive, info, "s", BIG)
        with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
            archive.read(info)


def test_members_it_does_not_handle_go_through_zipfile(tmp_path, monkeypatch):
    path = _zip(tmp_path / "a.zip", MEMBERS, compression=zipfile.ZIP_DEFLATED)
    streamed: list[str] = []
    original = zip_member.read_streamed

    def spy(archive, info, source, limit):
        streamed.append(info.filename)
        return original(archive, info, source, limit)

    monkeypatch.setattr(zip_member, "read_streamed", spy)
    name = "CIK0000000001.json"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        assert zip_member.read_member(archive, info, "s", BIG) == MEMBERS[name]
        assert streamed == []
        info.compress_size = 10**15  # more than deflate makes of the declared size: not pread
        assert zip_member.read_member(archive, info, "s", BIG) == MEMBERS[name]  # zipfile's way
        assert streamed == [name]
    in_memory = zipfile.ZipFile(io.BytesIO(path.read_bytes()))  # no file descriptor
    assert zip_member.read_member(in_memory, in_memory.getinfo(name), "s", BIG) == MEMBERS[name]
    assert streamed == [name, name]
    renamed = bytearray(path.read_bytes())  # the local header names another file
    at = renamed.index(name.encode())
    renamed[at] = ord("X")
    (tmp_path / "b.zip").write_bytes(bytes(renamed))
    with (
        zipfile.ZipFile(tmp_path / "b.zip") as archive,
        pytest.raises(zipfile.BadZipFile, match="differ"),
    ):
        zip_member.read_member(archive, archive.getinfo(name), "s", BIG)
    assert streamed[-1] == name


def test_a_damaged_member_fails_alone_in_the_companyfacts_reader(tmp_path, backend):
    doc = b'{"facts":{"us-gaap":{"A":{"units":{"USD":[%s]}}}}}' % b",".join(
        b'{"accn":"a%d","end":"2020-01-01","val":%d}' % (i, i) for i in range(3000)
    )
    path = _zip(
        tmp_path / "companyfacts.zip",
        {"CIK1.json": doc, "CIK2.json": doc, "CIK3.json": doc},
        compression=zipfile.ZIP_DEFLATED,
    )
    _break_deflate(path, "CIK2.json")
    results = list(read_companyfacts(path))
    assert [r.fact_count for r in results] == [3000, 0, 3000]
    assert results[1].error.startswith("cannot read archive member: CIK2.json")
    assert results[1].source.endswith("!CIK2.json")


def test_the_inflater_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(zip_member, "_state", {})
    with caplog.at_level(logging.INFO, logger=zip_member.__name__):
        first = zip_member.inflater()
        assert zip_member.inflater() is first
    expected = "ISA-L" if isal_zlib is not None else "with zlib"
    assert [r.getMessage() for r in caplog.records if expected in r.getMessage()] != []
    assert len(caplog.records) == 1
    assert first is (isal_zlib if isal_zlib is not None else zlib)
