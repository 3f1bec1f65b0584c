"""H.264 access units into RTP payloads (RFC 6184, packetization-mode 1), once per frame.

An RTMP anchor's frames arrive whole; the SFU forwards RTP, so each access unit is cut into
payloads once per room and then handled like a WebRTC publisher's packets. Consecutive small
NALs (SPS, PPS, SEI) share one STAP-A, a NAL larger than the payload budget is split into FU-A
fragments of near-equal size, anything else goes as a single NAL packet. AUD and filler NALs are
dropped (RTP marks frame ends itself). A keyframe always starts with SPS and PPS, the last ones
seen when the frame carries none, so a viewer can start from any keyframe's first packet.

The caller builds the RTP headers: one sequence number per payload, the frame's timestamp, the
marker bit on the last payload. Per frame, no per-packet objects beyond the payload bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_FILLER = 12
NAL_STAP_A = 24
NAL_FU_A = 28

DEFAULT_MTU_PAYLOAD = 1200


class H264Packetizer:
    """Stateful only in the parameter sets it remembers; one per RTMP video track."""

    __slots__ = ("_mtu", "_pps", "_sps")

    def __init__(self, mtu_payload: int = DEFAULT_MTU_PAYLOAD) -> None:
        if mtu_payload < 16:
            raise ValueError(f"mtu_payload {mtu_payload} is too small for H.264 RTP")
        self._mtu = mtu_payload
        self._sps: tuple[bytes, ...] = ()
        self._pps: tuple[bytes, ...] = ()

    @property
    def mtu_payload(self) -> int:
        return self._mtu

    def set_parameter_sets(self, sps_list: Sequence[bytes], pps_list: Sequence[bytes]) -> None:
        """Parameter sets from the RTMP sequence header, repeated before keyframes that do not
        carry their own."""
        self._sps = tuple(sps_list)
        self._pps = tuple(pps_list)

    def packetize(self, nals: Sequence[bytes], keyframe: bool) -> list[bytes]:
        """RTP payloads of one access unit, in order."""
        kept: list[bytes] = []
        has_sps = has_pps = has_idr = False
        for nal in nals:
            if not nal:
                continue
            kind = nal[0] & 0x1F
            if kind == NAL_AUD or kind == NAL_FILLER:
                continue
            if kind == NAL_IDR:
                has_idr = True
            elif kind == NAL_SPS:
                has_sps = True
            elif kind == NAL_PPS:
                has_pps = True
            kept.append(nal)
        if has_sps or has_pps:
            self._remember(kept)
        if (keyframe or has_idr) and not (has_sps and has_pps):
            missing: list[bytes] = []
            if not has_sps:
                missing.extend(self._sps)
            if not has_pps:
                missing.extend(self._pps)
            kept[:0] = missing
        return self._payloads(kept)

    def _remember(self, nals: list[bytes]) -> None:
        sps = tuple(nal for nal in nals if nal[0] & 0x1F == NAL_SPS)
        pps = tuple(nal for nal in nals if nal[0] & 0x1F == NAL_PPS)
        if sps:
            self._sps = sps
        if pps:
            self._pps = pps

    def _payloads(self, nals: list[bytes]) -> list[bytes]:
        mtu = self._mtu
        out: list[bytes] = []
        group: list[bytes] = []
        group_size = 1  # the STAP-A header byte
        for nal in nals:
            size = len(nal)
            if group and group_size + 2 + size <= mtu:
                group.append(nal)
                group_size += 2 + size
                continue
            if group:
                out.append(_aggregate(group))
            if size + 3 <= mtu:
                group = [nal]
                group_size = 3 + size
            else:
                group = []
                group_size = 1
                if size <= mtu:
                    out.append(nal)
                else:
                    _fragment(nal, mtu, out)
        if group:
            out.append(_aggregate(group))
        return out


def _aggregate(group: list[bytes]) -> bytes:
    """One NAL as a single NAL packet, several as a STAP-A (F = any F, NRI = highest NRI)."""
    if len(group) == 1:
        return group[0]
    forbidden = 0
    nri = 0
    parts = [b""]
    for nal in group:
        head = nal[0]
        forbidden |= head & 0x80
        if head & 0x60 > nri:
            nri = head & 0x60
        parts.append(len(nal).to_bytes(2, "big"))
        parts.append(nal)
    parts[0] = bytes((forbidden | nri | NAL_STAP_A,))
    return b"".join(parts)


_FU_PREFIXES: dict[int, tuple[bytes, bytes, bytes]] = {}  # NAL header byte -> FU-A headers


def _fu_prefixes(head: int) -> tuple[bytes, bytes, bytes]:
    """FU indicator + FU header for the start, middle and end fragments (S and E bits)."""
    indicator = (head & 0xE0) | NAL_FU_A
    kind = head & 0x1F
    prefixes = (bytes((indicator, 0x80 | kind)), bytes((indicator, kind)),
                bytes((indicator, 0x40 | kind)))
    _FU_PREFIXES[head] = prefixes
    return prefixes


def _fragment(nal: bytes, mtu: int, out: list[bytes]) -> None:
    """FU-A fragments of near-equal size (no runt last packet); F, NRI and type copied."""
    prefixes = _FU_PREFIXES.get(nal[0]) or _fu_prefixes(nal[0])
    first, middle, last = prefixes
    total = len(nal) - 1  # the NAL header travels in the FU headers
    count = -(-total // (mtu - 2))
    step = -(-total // count)
    body = memoryview(nal)
    pos = 1 + step
    out.append(first + body[1:pos])
    end = len(nal) - step
    while pos < end:
        out.append(middle + body[pos : pos + step])
        pos += step
    out.append(last + body[pos:])
