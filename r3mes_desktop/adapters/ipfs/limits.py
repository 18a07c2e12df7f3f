"""The size rule shared by the IPFS client and the devnet store (checked before any upload)."""

from __future__ import annotations

from r3mes_desktop.core.errors import ValidationError

MB = 1024 * 1024


def check_size(data: bytes, max_size_mb: int) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(f"gradient: expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ValidationError("gradient: empty data (expected 1 byte .. max_gradient_size_mb)")
    if len(data) > max_size_mb * MB:
        raise ValidationError(
            f"gradient: {len(data) / MB:.1f} MB exceeds max_gradient_size_mb={max_size_mb} "
            f"(accepted: 1 byte .. {max_size_mb} MB)"
        )
