"""CIDs computed locally, exactly as `ipfs add --cid-version=1 --raw-leaves` does.

Why local: the daemon's answer is checked against a CID derived from our own bytes, so a
buggy or hostile daemon cannot make us publish a CID that is not our gradient. Data up to one
chunk (256 KiB) is a single raw block: CIDv1(raw, sha2-256(data)). Larger data is the UnixFS
balanced DAG of the default importer (Kubo and js-ipfs agree on it): 256 KiB raw leaves, up
to 174 links per dag-pb node, each node a UnixFS File with filesize and blocksizes. This is
implemented here (no read-back needed) and checked against js-ipfs in the integration tests.

CIDs are compared by decoded content (version, codec, multihash), never as strings: js-ipfs
prints base58btc `zb2…` where Kubo prints base32 `bafk…` for the same CID.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from r3mes_desktop.core.errors import ValidationError

CHUNK_SIZE = 262_144
MAX_LINKS = 174
RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("truncated or oversized varint")


@dataclass(frozen=True)
class Cid:
    version: int
    codec: int
    multihash: bytes

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return _varint(1) + _varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.to_bytes())


def b32encode(data: bytes) -> str:
    bits = int.from_bytes(data, "big") if data else 0
    nbits = len(data) * 8
    pad = (-nbits) % 5
    bits <<= pad
    n = (nbits + pad) // 5
    return "".join(_B32[(bits >> (5 * (n - 1 - i))) & 31] for i in range(n))


def b32decode(text: str) -> bytes:
    bits = 0
    for ch in text:
        idx = _B32.find(ch)
        if idx < 0:
            raise ValueError(f"invalid base32 character {ch!r}")
        bits = (bits << 5) | idx
    nbits = len(text) * 5
    extra = nbits % 8
    return (bits >> extra).to_bytes(nbits // 8, "big")


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, rem = divmod(n, 58)
        out = _B58[rem] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        idx = _B58.find(ch)
        if idx < 0:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + idx
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def parse_cid(text: str) -> Cid:
    """Decode a CID string (CIDv0 `Qm…`, CIDv1 base32 `b…`/`B…` or base58btc `z…`)."""
    if not isinstance(text, str) or len(text) < 2:
        raise ValidationError(f"cid: not a CID string: {text!r}")
    try:
        if text.startswith("Qm") and len(text) == 46:
            return Cid(0, DAG_PB, b58decode(text))
        prefix, body = text[0], text[1:]
        if prefix == "b":
            raw = b32decode(body)
        elif prefix == "B":
            raw = b32decode(body.lower())
        elif prefix == "z":
            raw = b58decode(body)
        else:
            raise ValueError(f"unsupported multibase prefix {prefix!r}")
        version, pos = _read_varint(raw, 0)
        if version != 1:
            raise ValueError(f"unsupported CID version {version}")
        codec, pos = _read_varint(raw, pos)
        mh = raw[pos:]
        _code, p = _read_varint(mh, 0)
        length, p = _read_varint(mh, p)
        if len(mh) - p != length:
            raise ValueError("multihash length does not match its digest")
    except ValueError as exc:
        raise ValidationError(f"cid: cannot decode {text[:80]!r}: {exc}") from None
    return Cid(version, codec, mh)


def same_cid(a: str, b: str) -> bool:
    """True when two CID strings name the same content (any base, any version for dag-pb)."""
    ca, cb = parse_cid(a), parse_cid(b)
    return ca.codec == cb.codec and ca.multihash == cb.multihash


def _sha256_mh(data: bytes) -> bytes:
    return _varint(SHA2_256) + _varint(32) + hashlib.sha256(data).digest()


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(value)) + value


def _file_node(children: list[tuple[Cid, int, int]]) -> bytes:
    """dag-pb PBNode (Links first, then Data) for a UnixFS File over `children`
    given as (cid, file bytes under it, cumulative dag size)."""
    unixfs = _field_varint(1, 2)  # Type = File
    unixfs += _field_varint(3, sum(size for _, size, _ in children))  # filesize
    for _, size, _ in children:
        unixfs += _field_varint(4, size)  # blocksizes (proto2, not packed)
    out = b""
    for cid, _, tsize in children:
        link = _field_bytes(1, cid.to_bytes()) + _field_bytes(2, b"") + _field_varint(3, tsize)
        out += _field_bytes(2, link)
    return out + _field_bytes(1, unixfs)


def compute_cid(data: bytes) -> str:
    """The CIDv1 (base32) `ipfs add --cid-version=1 --raw-leaves` gives for `data`."""
    if len(data) <= CHUNK_SIZE:
        return str(Cid(1, RAW, _sha256_mh(data)))
    level: list[tuple[Cid, int, int]] = []
    for start in range(0, len(data), CHUNK_SIZE):
        chunk = data[start : start + CHUNK_SIZE]
        level.append((Cid(1, RAW, _sha256_mh(chunk)), len(chunk), len(chunk)))
    while len(level) > 1:
        parents = []
        for i in range(0, len(level), MAX_LINKS):
            group = level[i : i + MAX_LINKS]
            node = _file_node(group)
            size = sum(s for _, s, _ in group)
            tsize = len(node) + sum(t for _, _, t in group)
            parents.append((Cid(1, DAG_PB, _sha256_mh(node)), size, tsize))
        level = parents
    return str(level[0][0])
