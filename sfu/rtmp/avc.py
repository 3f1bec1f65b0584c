"""H.264 as RTMP carries it: the AVCDecoderConfigurationRecord and AVCC (length-prefixed) NALs.

Only the few header fields the SFU needs are read: the profile for the viewers' SDP, the
parameter sets to repeat before keyframes, and the slice type / nal_ref_idc that tell a
disposable B-frame from a reference picture. Nothing is decoded; every read is bounds-checked
and a short or inconsistent buffer raises ``MalformedMedia``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.errors import MalformedMedia

NAL_SLICE = 1
NAL_SLICE_PARTITION_A = 2
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_FILLER = 12

_SLICE_TYPES = ("P", "B", "I", "SP", "SI")
_SLICE_HEAD_BYTES = 16  # first_mb_in_slice + slice_type fit in far fewer bits
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


@dataclass(frozen=True)
class AvcConfig:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15), the RTMP sequence header."""

    profile_idc: int
    profile_compat: int  # constraint_set flags byte
    level_idc: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def profile_level_id(self) -> str:
        """The SDP ``profile-level-id``, e.g. "64001f" for High 3.1."""
        return f"{self.profile_idc:02x}{self.profile_compat:02x}{self.level_idc:02x}"

    @classmethod
    def parse(cls, record: bytes) -> AvcConfig:
        if len(record) < 7:
            raise MalformedMedia(f"AVC sequence header of {len(record)} bytes is truncated")
        if record[0] != 1:
            raise MalformedMedia(f"AVC sequence header has version {record[0]}, not 1")
        nal_length_size = (record[4] & 0x03) + 1
        sps, pos = _parameter_sets(record, 6, record[5] & 0x1F, NAL_SPS)
        if pos >= len(record):
            raise MalformedMedia("AVC sequence header ends before its PPS count")
        pps, pos = _parameter_sets(record, pos + 1, record[pos], NAL_PPS)
        if not sps or not pps:
            raise MalformedMedia("AVC sequence header carries no SPS or no PPS")
        return cls(record[1], record[2], record[3], nal_length_size, tuple(sps), tuple(pps))


def _parameter_sets(record: bytes, pos: int, count: int, kind: int) -> tuple[list[bytes], int]:
    sets: list[bytes] = []
    for _ in range(count):
        if pos + 2 > len(record):
            raise MalformedMedia("AVC sequence header is truncated in its parameter sets")
        size = (record[pos] << 8) | record[pos + 1]
        pos += 2
        if size == 0 or pos + size > len(record):
            raise MalformedMedia("AVC sequence header has a parameter set past its end")
        nal = record[pos : pos + size]
        if nal[0] & 0x1F != kind:
            raise MalformedMedia(f"AVC sequence header has NAL type {nal[0] & 0x1F} "
                                 f"where type {kind} belongs")
        sets.append(nal)
        pos += size
    return sets, pos


def split_avcc(data: bytes, nal_length_size: int = 4) -> list[bytes]:
    """The NAL units of one AVCC access unit (each prefixed by its big-endian length).

    Zero-length entries are skipped; a length past the end raises MalformedMedia."""
    if not 1 <= nal_length_size <= 4:
        raise MalformedMedia(f"AVC NAL length size {nal_length_size} is not 1-4")
    nals: list[bytes] = []
    pos = 0
    end = len(data)
    while pos < end:
        start = pos + nal_length_size
        if start > end:
            raise MalformedMedia("AVC access unit ends inside a NAL length")
        size = int.from_bytes(data[pos:start], "big")
        pos = start + size
        if pos > end:
            raise MalformedMedia(f"AVC NAL of {size} bytes runs past its access unit")
        if size:
            nals.append(data[start:pos])
    return nals


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def nal_ref_idc(nal: bytes) -> int:
    return (nal[0] >> 5) & 0x03


def _unescape(data: bytes) -> bytes:
    """RBSP from EBSP: drop the emulation-prevention 0x03 of every 00 00 03."""
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    """An exp-Golomb reader over an RBSP; running out raises MalformedMedia."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = 8 * len(data)

    def bit(self) -> int:
        if self._pos >= self._end:
            raise MalformedMedia("H.264 header ends before its fields")
        pos = self._pos
        self._pos = pos + 1
        return (self._data[pos >> 3] >> (7 - (pos & 7))) & 1

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise MalformedMedia("H.264 exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def slice_type(nal: bytes) -> str | None:
    """"I", "P", "B", "SP" or "SI" for a slice NAL (types 1, 2, 5); None for other NALs."""
    if not nal:
        raise MalformedMedia("empty NAL unit")
    kind = nal[0] & 0x1F
    if kind not in (NAL_SLICE, NAL_SLICE_PARTITION_A, NAL_IDR):
        return None
    bits = _Bits(_unescape(nal[1 : 1 + _SLICE_HEAD_BYTES]))
    bits.ue()  # first_mb_in_slice
    value = bits.ue()
    if value > 9:
        raise MalformedMedia(f"H.264 slice type {value} is out of range")
    return _SLICE_TYPES[value % 5]


def is_disposable(nals: list[bytes]) -> bool:
    """True when no other picture refers to this access unit: every slice has nal_ref_idc 0
    (x264's non-reference B-frames). False when it has no slice at all."""
    seen = False
    for nal in nals:
        if nal and 1 <= nal[0] & 0x1F <= 5:
            if nal[0] & 0x60:
                return False
            seen = True
    return seen


def sps_dimensions(sps: bytes) -> tuple[int, int]:
    """(width, height) in pixels after cropping, read from an SPS NAL (header byte included)."""
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise MalformedMedia("not an SPS NAL unit")
    bits = _Bits(_unescape(sps[1:]))
    profile = bits.bits(8)
    bits.bits(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            bits.bit()  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.bit()  # qpprime_y_zero_transform_bypass_flag
        if bits.bit():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format != 3 else 12):
                if bits.bit():
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.bit()
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.bit()
    if not frame_mbs_only:
        bits.bit()  # mb_adaptive_frame_field_flag
    bits.bit()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (2 - frame_mbs_only)
    if bits.bit():  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        crop_x = 2 if chroma_format in (1, 2) else 1
        crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        if chroma_format == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise MalformedMedia("SPS crops the picture to nothing")
    return width, height


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = scale = 8
    for _ in range(size):
        if scale:
            scale = (last + bits.se() + 256) % 256
        last = scale or last
