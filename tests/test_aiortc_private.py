"""The aiortc seam: every private name it relies on is checked once at start-up, a missing
one is named (and stops ``shopcast serve`` without a traceback), and the per-packet path
calls exactly what it called before the seam existed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aioice.ice
import aiortc
import aiortc.codecs
import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket
from waiting import wait_for

from sfu import aiortc_private
from sfu.aiortc_private import AiortcIncompatible
from sfu.consumer import Consumer, release_socket
from sfu.ice import use_host_addresses
from sfu.producer import Producer

ROOT = Path(__file__).resolve().parent.parent
H264 = RTCRtpCodecParameters(
    mimeType="video/H264", clockRate=90000, payloadType=102,
    parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
)


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget that this process already passed the check."""
    monkeypatch.setattr(aiortc_private, "_checked", False)


def drop_after_init(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
    """Simulate an aiortc whose ``cls.__init__`` no longer sets ``name``."""
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]

    def without(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        delattr(self, name)

    monkeypatch.setattr(cls, "__init__", without)


def test_the_pinned_aiortc_passes(unchecked: None) -> None:
    assert aiortc.__version__ == aiortc_private.BUILT_FOR
    assert aioice.__version__ == aiortc_private.AIOICE_BUILT_FOR
    assert aiortc_private.missing_names() == []
    aiortc_private.check()


async def test_the_check_also_runs_inside_an_event_loop(unchecked: None) -> None:
    assert aiortc_private.missing_names() == []


def test_a_missing_method_is_named(monkeypatch: pytest.MonkeyPatch, unchecked: None) -> None:
    monkeypatch.delattr(RTCRtpReceiver, "_send_rtcp_pli")
    with pytest.raises(AiortcIncompatible) as raised:
        aiortc_private.check()
    message = str(raised.value)
    assert "RTCRtpReceiver._send_rtcp_pli" in message
    assert "aiortc==1.16.0" in message
    assert not aiortc_private._checked  # a failed check is not remembered as passed


def test_a_missing_instance_attribute_is_named(
    monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    drop_after_init(monkeypatch, RTCRtpSender, "_RTCRtpSender__lsr_time")
    assert aiortc_private.missing_names() == ["RTCRtpSender.__lsr_time"]


def test_a_method_that_stopped_using_a_name_is_named(
    monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    async def handle_rtp_packet(self: RTCRtpReceiver, packet: RtpPacket, arrival: int) -> None:
        self._frames.add(packet)  # type: ignore[attr-defined]  # a renamed jitter buffer

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", handle_rtp_packet)
    assert aiortc_private.missing_names() == [
        "RTCRtpReceiver.__jitter_buffer (used by RTCRtpReceiver._handle_rtp_packet)"
    ]


def test_a_module_global_that_is_gone_is_named(
    monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    monkeypatch.delattr(aioice.ice, "get_host_addresses")
    monkeypatch.delattr(aiortc.codecs, "CODECS")
    missing = aiortc_private.missing_names()
    assert "aioice.ice.get_host_addresses" in missing
    assert "aiortc.codecs.CODECS" in missing


async def test_a_tap_never_silently_taps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    drop_after_init(monkeypatch, RTCRtpReceiver, "_RTCRtpReceiver__jitter_buffer")
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        with pytest.raises(AiortcIncompatible, match=r"RTCRtpReceiver\.__jitter_buffer"):
            aiortc_private.jitter_buffer_tap(receiver, object())  # type: ignore[arg-type]
    finally:
        await pc.close()


def test_install_or_exit_exits_with_the_message(
    monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    monkeypatch.delattr(RTCRtpSender, "_send_rtcp")
    with pytest.raises(SystemExit) as raised:
        aiortc_private.install_or_exit()
    assert "RTCRtpSender._send_rtcp" in str(raised.value.code)


@pytest.mark.slow
def test_serve_refuses_an_unknown_aiortc(tmp_path: Path) -> None:
    """The real command line, in a process whose aiortc lacks one private method."""
    script = (
        "import sys, aiortc\n"
        "del aiortc.RTCRtpSender._handle_rtcp_packet\n"
        "from shopcast.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "serve", "--host", "127.0.0.1", "--port", "0",
         "--secret-file", str(tmp_path / "secret")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode != 0
    assert "RTCRtpSender._handle_rtcp_packet" in proc.stderr
    assert "aiortc==1.16.0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "serving" not in proc.stdout


@pytest.mark.slow
def test_a_worker_process_refuses_an_unknown_aiortc() -> None:
    """A worker checks too, before it touches its sockets."""
    script = (
        "import sys, aiortc\n"
        "del aiortc.RTCRtpSender._send_rtcp\n"
        "from sfu.worker import main\n"
        "sys.argv[1:] = ['--control-fd', '0', '--media-fd', '0', '--settings', '{}']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "RTCRtpSender._send_rtcp" in proc.stderr
    assert "Traceback" not in proc.stderr


async def _connected_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[RTCPeerConnection, RTCPeerConnection, RTCRtpSender]:
    """A node-side sendonly transceiver connected to a viewer on loopback."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    use_host_addresses(["127.0.0.1"])
    config = RTCConfiguration(iceServers=[])
    node, viewer = RTCPeerConnection(config), RTCPeerConnection(config)
    sender = node.addTransceiver("video", direction="sendonly").sender
    await node.setLocalDescription(await node.createOffer())
    await viewer.setRemoteDescription(node.localDescription)
    await viewer.setLocalDescription(await viewer.createAnswer())
    await node.setRemoteDescription(
        RTCSessionDescription(sdp=viewer.localDescription.sdp, type="answer")
    )
    await wait_for(lambda: node.connectionState == "connected", 10, "a loopback connection")
    return node, viewer, sender


async def test_the_per_packet_path_calls_protect_and_send_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Consumer.forward`` gets aiortc's own SRTP protect and the socket's own send, bound at
    setup: per packet it calls exactly those two (and ``len``), no wrapper of the seam."""
    node, viewer, sender = await _connected_sender(monkeypatch)
    try:
        producer = Producer("video", H264, publisher_id="p", request_keyframe=lambda ssrc: None)
        consumer = Consumer.for_sender(producer, sender, H264.payloadType, "v")
        dtls = sender.transport
        assert consumer._protect == dtls._tx_srtp.protect
        assert sender._handle_rtcp_packet == consumer.handle_rtcp
        packet = RtpPacket(payload_type=H264.payloadType, sequence_number=1, timestamp=3000,
                           ssrc=producer.ssrc, payload=b"\x65" * 100).serialize()
        calls: list[str] = []
        depth = 0

        def profile(frame: Any, event: str, arg: Any) -> None:
            nonlocal depth
            if event == "call":
                if depth == 1:
                    calls.append(frame.f_code.co_name)
                depth += 1
            elif event == "return":
                depth -= 1
            elif event == "c_call" and depth == 1:
                calls.append(arg.__name__)

        sys.setprofile(profile)
        try:
            consumer.forward(packet, True)
        finally:
            sys.setprofile(None)
        assert calls == ["protect", "send", "len"]
        assert consumer.packets == 1
        release_socket(dtls)
    finally:
        await node.close()
        await viewer.close()
