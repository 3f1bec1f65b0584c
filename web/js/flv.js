// HTTP-FLV playback with mpegts.js: the viewer page's fallback when WebRTC cannot play.
// mpegts.js comes from npm (web/package.json, installed by ./dev setup) and is served by this
// server at /vendor/mpegts.js (never a CDN). It is loaded on first use only, so WebRTC viewers
// never download it.

const MPEGTS_URL = "/vendor/mpegts.js";

// Live, low latency: no IO stash (tags go to MSE as they arrive), and two ways of keeping the
// <video> element's own buffer short. The server already bounds how far behind a reader may fall
// (its latency budget skips a slow reader to the newest keyframe); these bound the player side:
// liveSync plays at 1.2x while more than 1.2 s is buffered, back down to 0.8 s, and
// liveBufferLatencyChasing seeks forward if the buffer still exceeds 1.5 s (say, after a stall).
export const PLAYER_CONFIG = {
  enableWorker: false, // one 1-2 Mbit/s stream transmuxes cheaply on the main thread
  enableStashBuffer: false,
  stashInitialSize: 64 * 1024,
  isLive: true,
  lazyLoad: false, // never pause the download of a live stream
  liveBufferLatencyChasing: true,
  liveBufferLatencyMaxLatency: 1.5,
  liveBufferLatencyMinRemain: 0.3,
  liveSync: true,
  liveSyncMaxLatency: 1.2,
  liveSyncTargetLatency: 0.8,
  liveSyncPlaybackRate: 1.2,
  autoCleanupSourceBuffer: true, // hours-long sessions: drop played media from the SourceBuffer
  autoCleanupMaxBackwardDuration: 30,
  autoCleanupMinBackwardDuration: 10,
  fixAudioTimestampGap: true,
};

let loading = null;

// window.mpegts, loading /vendor/mpegts.js first if needed.
export function loadMpegts() {
  if (window.mpegts) return Promise.resolve(window.mpegts);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = MPEGTS_URL;
      script.async = true;
      script.onload = () => {
        if (window.mpegts) resolve(window.mpegts);
        else reject(new Error(`${MPEGTS_URL} loaded but defined no mpegts`));
      };
      script.onerror = () => {
        loading = null;
        script.remove();
        reject(new Error(`cannot load ${MPEGTS_URL} (run ./dev setup to install web dependencies)`));
      };
      document.head.append(script);
    });
  }
  return loading;
}

// Media Source Extensions with live playback: what mpegts.js needs (iOS Safari on iPhone lacks it).
export function flvSupported(mpegts) {
  return mpegts.isSupported() && mpegts.getFeatureList().mseLivePlayback;
}

// `url` with ?token=... (players cannot send an Authorization header).
export function withToken(url, token) {
  const u = new URL(url, location.href);
  u.searchParams.set("token", token);
  return u.href;
}

// One FLV session on `video`. `onEnd(error)` is called once: error is null when the stream ended
// (the anchor left, or the server dropped this reader), else {kind, detail, status, message}.
// Returns an object with stop() and stats().
export function playFlv(mpegts, video, url, onEnd) {
  const player = mpegts.createPlayer({ type: "flv", isLive: true, cors: true, url }, PLAYER_CONFIG);
  let ended = false;
  let stopped = false;
  const finish = (error) => {
    if (ended || stopped) return;
    ended = true;
    onEnd(error);
  };
  player.on(mpegts.Events.ERROR, (kind, detail, info) => {
    finish({ kind, detail, status: (info && info.code) || 0, message: (info && info.msg) || detail });
  });
  player.on(mpegts.Events.LOADING_COMPLETE, () => finish(null));
  player.attachMediaElement(video);
  player.load();
  const started = player.play();
  if (started && started.catch) started.catch(() => {}); // autoplay refusal: the Unmute button plays

  return {
    url,
    // The FLV timestamp (ms) of `mediaTime` (seconds on the <video> element's timeline), or
    // null until known. mpegts.js rebases timestamps to its first sample's; it does not expose
    // that base, so it is read from its remuxer (mpegts.js 1.8, main-thread transmuxing, as
    // PLAYER_CONFIG asks). Without it the page has no FLV clock and shows events at once.
    flvMs(mediaTime) {
      let base;
      try {
        base = player._player_engine._transmuxer._controller._remuxer.getTimestampBase();
      } catch { return null; }
      return Number.isFinite(base) ? Math.round(mediaTime * 1000) + base : null;
    },
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        player.pause();
        player.unload();
        player.detachMediaElement();
        player.destroy();
      } catch { /* already torn down */ }
    },
    // For tests and the debug overlay: frames the element decoded, where playback is, and how
    // much media is buffered ahead of it (the player-side share of the latency).
    stats() {
      const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
      const info = player.statisticsInfo || {};
      const b = video.buffered;
      const end = b && b.length ? b.end(b.length - 1) : 0;
      return {
        decodedFrames: quality ? quality.totalVideoFrames : (info.decodedFrames || 0),
        droppedFrames: quality ? quality.droppedVideoFrames : (info.droppedFrames || 0),
        currentTime: video.currentTime,
        bufferedAhead: Math.max(0, end - video.currentTime),
        playbackRate: video.playbackRate,
        speedKBps: info.speed || 0,
        width: video.videoWidth,
        height: video.videoHeight,
        url,
      };
    },
  };
}
