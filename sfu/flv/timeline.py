"""One millisecond timeline for a room's FLV tags, from each track's RTP clock.

Audio and video RTP timestamps have different clock rates and random offsets; the publisher's
sender reports map both to its NTP clock, which is what lines them up (lip sync). Before a
track's first report the mapping is "this timestamp arrived now" (the producer's fallback).
The publisher's NTP clock may differ from ours by seconds, so when a track switches to a
reported mapping the offset between the two clocks is measured once, on that track, and
applied to every track: the timeline stays continuous and A/V alignment comes from the reports.
"""

from __future__ import annotations

from collections.abc import Callable

NTP_FRACTION = float(1 << 32)
MAX_JUMP_S = 30.0

SenderReport = Callable[[], tuple[int, int]]


def ntp_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / NTP_FRACTION


class TrackClock:
    """Maps one track's RTP timestamps to seconds on the room's clock."""

    def __init__(self, timeline: Timeline, clock_rate: int, report: SenderReport,
                 has_report: Callable[[], bool], has_packets: Callable[[], bool]) -> None:
        self._timeline = timeline
        self.clock_rate = clock_rate
        self._report = report
        self._has_report = has_report
        self._has_packets = has_packets
        self._reported = False
        self._anchor: tuple[float, int] | None = None  # (seconds, rtp timestamp)

    def refresh(self) -> None:
        """Take the producer's latest mapping (cheap; call about once a second)."""
        if not self._has_packets():
            return  # the fallback mapping pairs "now" with a timestamp not seen yet
        ntp, rtp = self._report()
        reported = self._has_report()
        seconds = ntp_seconds(ntp)
        if reported:
            if not self._reported and self._anchor is not None:
                self._timeline.adopt_publisher_clock(self._seconds(rtp), seconds)
            seconds += self._timeline.publisher_offset
        elif self._reported:
            return  # never go back from a reported mapping to an arrival-time one
        self._reported = reported
        self._anchor = (seconds, rtp)

    def _seconds(self, rtp: int) -> float:
        if self._anchor is None:
            self.refresh()
        if self._anchor is None:
            return self._timeline.epoch or 0.0
        seconds, anchor_rtp = self._anchor
        delta = (rtp - anchor_rtp) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 1 << 32
        if abs(delta) > MAX_JUMP_S * self.clock_rate and not self._reported:
            self._anchor = None  # a new timestamp base (say, a new SSRC): map it afresh
            return self._seconds(rtp) if self._has_packets() else seconds
        return seconds + delta / self.clock_rate

    def ms(self, rtp: int) -> int:
        """Milliseconds since the room's epoch (the first timestamp asked for), never < 0."""
        return self._timeline.ms(self._seconds(rtp))


class Timeline:
    """The room's epoch and the publisher-to-local clock offset shared by its tracks."""

    def __init__(self) -> None:
        self.epoch: float | None = None
        self.publisher_offset = 0.0
        self._adopted = False

    def track(self, clock_rate: int, report: SenderReport, has_report: Callable[[], bool],
              has_packets: Callable[[], bool]) -> TrackClock:
        return TrackClock(self, clock_rate, report, has_report, has_packets)

    def adopt_publisher_clock(self, local: float, publisher: float) -> None:
        """First reported mapping: remember how far the publisher's clock is from ours."""
        if not self._adopted:
            self._adopted = True
            self.publisher_offset = local - publisher

    def ms(self, seconds: float) -> int:
        if self.epoch is None:
            self.epoch = seconds
        return max(0, round((seconds - self.epoch) * 1000))
