"""Hypothesis strategies that mutate golden recordings the way a fuzzer does.

Pure random bytes rarely get past a decoder's first length check; starting from a real
recording and flipping, overwriting, inserting, deleting, truncating and splicing reaches the
nested attributes, inner headers and records where bounds bugs live.
"""

from __future__ import annotations

from hypothesis import strategies as st

_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x05, 0x40, 0x45, 0x60, 0x10)


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed with 0-8 random edits, or (one case in eight) random bytes."""
    if not seeds or draw(st.integers(0, 7)) == 0:
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:  # flip one bit
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:  # an interesting byte
            data[pos] = draw(st.sampled_from(_INTERESTING))
        elif op == 2 and len(data) >= 2:  # an interesting 16-bit value (lengths!)
            v = draw(st.sampled_from((0, 1, 3, 4, 0x7FFF, 0x8000, 0xFFFF)))
            data[pos:pos + 2] = v.to_bytes(2, draw(st.sampled_from(("little", "big"))))
        elif op == 3:  # insert
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == 4 and data:  # delete
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == 5:  # truncate
            del data[pos:]
        elif op == 6 and data:  # duplicate a slice somewhere else
            end = pos + draw(st.integers(1, 64))
            at = draw(st.integers(0, len(data)))
            data[at:at] = data[pos:end]
    return bytes(data)
