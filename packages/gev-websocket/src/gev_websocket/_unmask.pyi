# The native XOR kernel (_unmask.c); absent from pure installs and under GEV_PURE_PYTHON=1.

_Bytes = bytes | bytearray | memoryview

def apply_mask(data: _Bytes, mask: _Bytes, /) -> bytes: ...
