"""ICE settings for every peer connection of this node.

No STUN or TURN server is used unless configured (aiortc would otherwise fall back to a public
STUN server). Candidates are gathered on the configured host addresses, loopback included when
asked for; a NAT'ed host announces its public IP in place of its host addresses.
"""

from __future__ import annotations

import re

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from sfu.aiortc_private import AIOICE_HOST_ADDRESSES, install_host_addresses

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$", re.MULTILINE)
_CONNECTION = re.compile(r"^c=IN IP4 \S+$", re.MULTILINE)


def use_host_addresses(addresses: list[str], *, add_loopback: bool = False) -> None:
    """Gather host candidates on exactly these addresses (process-wide, set at start-up).

    aioice lists every interface but loopback; tests and single-machine demos need 127.0.0.1,
    and multi-homed hosts want to choose. With no list, aioice's choice is kept, plus
    127.0.0.1 when ``add_loopback`` (a node serving on loopback).
    """
    chosen = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        found = chosen or AIOICE_HOST_ADDRESSES(use_ipv4, use_ipv6)
        if not chosen and add_loopback and use_ipv4:
            found = [*found, "127.0.0.1"]
        return [a for a in found if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    install_host_addresses(get_host_addresses)


def rtc_configuration(
    stun_url: str = "", turn_url: str = "", turn_username: str = "", turn_password: str = ""
) -> RTCConfiguration:
    """An explicit server list, empty by default: never a public STUN server silently.

    MAX_BUNDLE: with aiortc's default (balanced), a second section of a kind keeps a transport
    that bundling later stops, so a viewer's second publisher slot would never send.
    """
    servers: list[RTCIceServer] = []
    if stun_url:
        servers.append(RTCIceServer(urls=stun_url))
    if turn_url:
        servers.append(
            RTCIceServer(urls=turn_url, username=turn_username, credential=turn_password)
        )
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def announce_public_ip(sdp: str, public_ip: str) -> str:
    """Rewrite host candidates (and c= lines) to the public IP of a 1:1 NAT'ed host."""
    if not public_ip:
        return sdp
    sdp = _CANDIDATE.sub(lambda m: m.group(1) + public_ip + m.group(3), sdp)
    return _CONNECTION.sub(f"c=IN IP4 {public_ip}", sdp)
