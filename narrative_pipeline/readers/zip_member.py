"""One member of a zip archive read whole: one positioned read of its compressed bytes, one
inflate call and one CRC-32, with ISA-L (the `isal` package) when it is installed, zlib
otherwise (a log line says which, once).

Why: reading the bulk companyfacts.zip, zipfile's streaming reader (1 MiB chunks through
Python, zlib's inflate and CRC-32) cost about a third of the CPU of reading a member; ISA-L
inflates about 2x faster and its CRC-32 is about 7x faster (benchmarks/RESULTS.md, "Member
parse CPU").

Same bytes and the same checks as zipfile's reader: the member's local header must carry the
magic number and the directory's name, at most the directory's uncompressed size is kept (as
zipfile truncates to it), and the CRC-32 must match, else BadZipFile naming the member. A
damaged deflate stream is a BadZipFile too (zipfile lets zlib.error escape; see
`read_streamed`). Anything this path does not handle is read by zipfile's reader as before:
a member that is encrypted or compressed with something other than deflate or stored, a
local header whose name differs, a compressed size beyond what deflate can produce from the
declared size, an archive not backed by a file descriptor.

Bounded input: the declared size is checked against the cap before anything is read, the
inflate stops one byte past the declared size, and the compressed bytes read are at most
that size plus deflate's worst-case overhead.
"""

from __future__ import annotations

import logging
import os
import struct
import zipfile
import zlib
from types import ModuleType

from narrative_pipeline.readers.limits import read_stream_capped, too_large

log = logging.getLogger(__name__)
LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # the zip format's local file header (30 bytes)
LOCAL_MAGIC = b"PK\x03\x04"
HANDLED_FLAGS = 0x2 | 0x4 | 0x8 | 0x800  # deflate options, data descriptor, UTF-8 name
_state: dict[str, ModuleType] = {}


def inflater() -> ModuleType:
    """isal.isal_zlib (ISA-L) when installed, else zlib: the same decompressobj/crc32 API
    (chosen and logged once)."""
    if "module" not in _state:
        try:
            from isal import isal_zlib
        except ImportError:
            log.info("zip members inflated with zlib (install `isal` for ~2x faster inflate)")
            _state["module"] = zlib
        else:
            log.info("zip members inflated with ISA-L (isal)")
            _state["module"] = isal_zlib
    return _state["module"]


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, limit: int) -> bytes:
    """The member's bytes; InputTooLarge past `limit`, BadZipFile/EOFError when damaged."""
    if info.file_size > limit:
        raise too_large(source, limit)  # declared size: not even started
    fd = _descriptor(archive)
    if fd is None or not _handled(info):
        return read_streamed(archive, info, source, limit)
    start = _data_offset(fd, info)
    if start is None:
        return read_streamed(archive, info, source, limit)  # zipfile names the disagreement
    raw = os.pread(fd, info.compress_size, start)
    if len(raw) < info.compress_size:
        raise EOFError(f"{info.filename}: archive truncated inside the member")
    return checked(inflate(raw, info, inflater()), info, inflater())


def read_streamed(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, limit: int
) -> bytes:
    """The member through zipfile's streaming reader, capped at `limit` (a zip can lie about
    its sizes); a damaged deflate stream is a BadZipFile naming the member."""
    try:
        with archive.open(info) as stream:
            return read_stream_capped(stream, source, limit)
    except zlib.error as exc:
        raise zipfile.BadZipFile(f"{info.filename}: damaged deflate data ({exc})") from exc


def inflate(raw: bytes, info: zipfile.ZipInfo, module: ModuleType) -> bytes:
    """The member's data from its compressed bytes: at most its declared size, as zipfile's
    reader keeps (`module`: zlib or isal_zlib)."""
    if info.compress_type == zipfile.ZIP_STORED:
        return raw[: info.file_size]
    inflating = module.decompressobj(-15)
    try:
        data = inflating.decompress(raw, info.file_size + 1)
    except module.error as exc:
        raise zipfile.BadZipFile(f"{info.filename}: damaged deflate data ({exc})") from exc
    return data[: info.file_size]


def checked(data: bytes, info: zipfile.ZipInfo, module: ModuleType) -> bytes:
    """`data` when its CRC-32 is the directory's, else zipfile's error."""
    if module.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
    return data


def _descriptor(archive: zipfile.ZipFile) -> int | None:
    """The open archive's file descriptor for os.pread (which leaves zipfile's own position
    alone), or None: not backed by a file, closed, or no pread on this system."""
    fp = getattr(archive, "fp", None)
    if fp is None or not hasattr(os, "pread"):
        return None
    try:
        return fp.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return None


def _handled(info: zipfile.ZipInfo) -> bool:
    """Deflated or stored, not encrypted, and a compressed size deflate can produce from the
    declared size (stored blocks: 5 bytes per 64 KiB), so a lying header cannot make us read
    more than the cap allows."""
    return (
        info.compress_type in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED)
        and not info.flag_bits & ~HANDLED_FLAGS
        and info.compress_size <= info.file_size + (info.file_size >> 8) + 1024
    )


def _data_offset(fd: int, info: zipfile.ZipInfo) -> int | None:
    """Where the member's compressed bytes start; None when its local header does not carry
    the magic number and the directory's name (zipfile's reader then says what is wrong)."""
    header = os.pread(fd, LOCAL_HEADER.size, info.header_offset)
    if len(header) < LOCAL_HEADER.size:
        return None
    fields = LOCAL_HEADER.unpack(header)
    name_length, extra_length = fields[-2], fields[-1]
    name = os.pread(fd, name_length, info.header_offset + LOCAL_HEADER.size)
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if fields[0] != LOCAL_MAGIC or name != info.orig_filename.encode(encoding, "replace"):
        return None
    return info.header_offset + LOCAL_HEADER.size + name_length + extra_length
