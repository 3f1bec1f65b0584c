"""Load generators and latency probes; they speak only public protocols (WHIP/WHEP, WebRTC)."""
