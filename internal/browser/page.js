// The page of the browser test harness (internal/browser). window.HARNESS
// holds the test's config; the page runs JsSIP on it and POSTs one result
// to /result. Loaded before jssip.js so that the console is captured first.
'use strict';

(function () {
  const cfg = window.HARNESS;
  const consoleLines = [];
  const messages = [];
  const maxConsole = 5000;
  let reported = false;

  function fmt(args) {
    // The debug module formats with %c (CSS): drop those and their args.
    const out = [];
    let i = 0;
    if (typeof args[0] === 'string' && args[0].includes('%')) {
      i = 1;
      out.push(args[0].replace(/%([csdioOjf%])/g, (m, k) => {
        if (k === '%') return '%';
        if (i >= args.length) return m;
        const a = args[i++];
        return k === 'c' ? '' : str(a);
      }));
    }
    for (; i < args.length; i++) out.push(str(args[i]));
    return out.join(' ');
  }

  function str(a) {
    if (typeof a === 'string') return a;
    if (a instanceof Error) return a.stack || String(a);
    try { return JSON.stringify(a); } catch (e) { return String(a); }
  }

  for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
    const orig = console[level].bind(console);
    console[level] = function (...args) {
      if (consoleLines.length < maxConsole) {
        consoleLines.push(level + ': ' + fmt(args));
      }
      orig(...args);
    };
  }

  function report(r) {
    if (reported) return;
    reported = true;
    r.messages = messages;
    r.console = consoleLines;
    r.userAgent = navigator.userAgent;
    fetch('/result', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(r),
    }).catch((e) => console.error('POST /result: ' + e));
  }
  window.harnessReport = report;

  window.addEventListener('error', (e) => {
    consoleLines.push('uncaught: ' + e.message + ' at ' + e.filename + ':' + e.lineno);
    report({ error: 'page error: ' + e.message });
  });
  window.addEventListener('unhandledrejection', (e) => {
    consoleLines.push('unhandled rejection: ' + str(e.reason));
    report({ error: 'page error: ' + str(e.reason) });
  });

  // statusOf parses the status code of a SIP response ('' for a request)
  // and the method of its CSeq.
  function statusOf(text) {
    const m = /^SIP\/2\.0 (\d{3})/.exec(text);
    const c = /^CSeq:\s*\d+\s+(\S+)/im.exec(text);
    return { code: m ? Number(m[1]) : 0, method: c ? c[1].toUpperCase() : '' };
  }

  // loopbackOnly drops the a=candidate lines of the SDP whose address is
  // not a loopback one (127.0.0.0/8, ::1), and records them in dropped.
  function loopbackOnly(sdp, dropped) {
    const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
    return sdp.split(eol).filter((line) => {
      if (!line.startsWith('a=candidate:')) return true;
      const f = line.split(' ');
      const addr = f[4] || '';
      if (/^127\./.test(addr) || addr === '::1') return true;
      dropped.push(line);
      return false;
    }).join(eol);
  }

  // mediaStats reads getStats into the harness's MediaStats.
  async function mediaStats(pc) {
    const report = await pc.getStats();
    const all = [];
    report.forEach((r) => all.push(r));
    const m = { raw: all };
    const byId = (id) => (id ? report.get(id) : undefined);
    const addr = (c) => (c ? (c.address || c.ip) + ':' + c.port : '');
    for (const r of all) {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        m.packetsReceived = r.packetsReceived || 0;
        m.bytesReceived = r.bytesReceived || 0;
        m.packetsLost = r.packetsLost || 0;
        m.jitter = r.jitter || 0;
        m.totalAudioEnergy = r.totalAudioEnergy || 0;
        m.totalSamplesReceived = r.totalSamplesReceived || 0;
        const c = byId(r.codecId);
        if (c) m.codec = c.mimeType;
      } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
        m.packetsSent = r.packetsSent || 0;
      } else if (r.type === 'transport') {
        m.dtlsState = r.dtlsState || '';
        m.srtpCipher = r.srtpCipher || '';
        m.dtlsRole = r.dtlsRole || '';
        m.iceState = r.iceState || '';
        const pair = byId(r.selectedCandidatePairId);
        if (pair) {
          m.localCandidate = addr(byId(pair.localCandidateId));
          m.remoteCandidate = addr(byId(pair.remoteCandidateId));
        }
      }
    }
    return m;
  }

  let onReceived = null;
  let afterReceived = () => {};

  function main() {
    if (!window.JsSIP) {
      report({ error: 'page error: JsSIP did not load' });
      return;
    }
    const JsSIP = window.JsSIP;
    JsSIP.debug.enable('JsSIP:*');

    // TapSocket is JsSIP's WebSocket with every SIP message recorded.
    class TapSocket extends JsSIP.WebSocketInterface {
      send(message) {
        messages.push({ dir: 'sent', text: String(message) });
        return super.send(message);
      }
      _onMessage(ev) {
        if (typeof ev.data === 'string') {
          messages.push({ dir: 'received', text: ev.data });
          if (onReceived) onReceived(ev.data);
        }
        super._onMessage(ev);
        if (typeof ev.data === 'string') afterReceived(ev.data);
      }
    }

    let ua;
    try {
      const config = {
        sockets: [new TapSocket(cfg.wssURL)],
        uri: cfg.uri,
        register: false,
        // One connection attempt is all a test wants to see.
        connection_recovery_min_interval: 30,
        connection_recovery_max_interval: 30,
      };
      if (cfg.password) config.password = cfg.password;
      if (cfg.authUser) config.authorization_user = cfg.authUser;
      if (cfg.expires) config.register_expires = cfg.expires;
      ua = new JsSIP.UA(config);
    } catch (e) {
      report({ error: 'page error: JsSIP configuration: ' + str(e) });
      return;
    }

    let connected = false;
    ua.on('connected', () => {
      connected = true;
      if (cfg.action === 'register' || cfg.action === 'answer' || cfg.register) {
        ua.register();
      } else {
        call();
      }
    });
    ua.on('disconnected', (e) => {
      report({
        error: connected ? 'WebSocket closed' : 'connection failed',
        wsCloseCode: e.code || 0,
        reason: e.reason || '',
      });
    });
    let registered = false;
    ua.on('registered', (e) => {
      registered = true;
      if (cfg.action === 'register') {
        report({ status: e.response.status_code, reason: e.response.reason_phrase, registered: true });
      } else if (cfg.action !== 'answer') {
        call();
      }
    });
    // answer: each incoming call is answered (no media: no candidate) and
    // ended as cfg.hangups says, in order: 'local' (the browser hangs up
    // holdMs after the ACK and waits for the answer to its BYE, 5 s at
    // most) or 'remote' (it waits for the caller's BYE). The page reports
    // once every planned call ended.
    const answered = [];
    const hangups = cfg.hangups || [];
    function answeredAll() {
      if (answered.length >= hangups.length && answered.every((r) => r.done)) {
        report({ status: 200, registered, calls: answered });
      }
    }
    ua.on('newRTCSession', (e) => {
      if (cfg.action !== 'answer' || e.originator !== 'remote') return;
      const rec = {
        hangup: hangups[answered.length] || 'remote',
        requestLine: e.request ? e.request.method + ' ' + String(e.request.ruri) : '',
        endedBy: '',
        cause: '',
        byeStatus: 0,
        done: false,
      };
      answered.push(rec);
      const session = e.session;
      const done = () => {
        if (rec.done) return;
        rec.done = true;
        answeredAll();
      };
      session.on('confirmed', () => {
        if (rec.hangup !== 'local') return;
        setTimeout(() => {
          const timer = setTimeout(done, 5000);
          onReceived = (text) => {
            const s = statusOf(text);
            if (s.method === 'BYE' && s.code >= 200) {
              rec.byeStatus = s.code;
              clearTimeout(timer);
              onReceived = null;
              done();
            }
          };
          session.terminate();
        }, cfg.holdMs || 0);
      });
      session.on('ended', (ev) => {
        rec.endedBy = ev.originator;
        rec.cause = ev.cause || '';
        if (rec.hangup !== 'local') done();
      });
      session.on('failed', (ev) => {
        rec.endedBy = ev.originator;
        rec.cause = 'failed: ' + (ev.cause || '');
        done();
      });
      session.answer({
        mediaConstraints: { audio: true, video: false },
        pcConfig: { iceServers: [], iceTransportPolicy: 'relay' },
      });
    });
    // JsSIP drops a 2xx to REGISTER that does not list its Contact, and
    // then waits for nothing: report it instead of hanging.
    afterReceived = (text) => {
      const s = statusOf(text);
      if (s.method !== 'REGISTER' || s.code < 200 || s.code > 299) return;
      setTimeout(() => {
        if (registered) return;
        const m = /^SIP\/2\.0 \d{3} ?(.*)$/m.exec(text);
        report({
          status: s.code,
          reason: m ? m[1].trim() : '',
          cause: 'JsSIP ignored the 2xx to REGISTER (no Contact of its own in it)',
        });
      }, 500);
    };
    ua.on('registrationFailed', (e) => {
      report({
        status: e.response ? e.response.status_code : 0,
        reason: e.response ? e.response.reason_phrase : '',
        cause: e.cause || '',
      });
    });

    function call() {
      const provisional = [];
      let final = null;
      const dropped = [];
      // Without media: no TURN server and relay only, so ICE gathers no
      // candidate, the offer names no address of this machine and no
      // check is sent. With media: every host candidate (loopback ones
      // too: --allow-loopback-in-peer-connection), of which the offer
      // keeps the loopback ones only.
      const pcConfig = cfg.media
        ? { iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' }
        : { iceServers: [], iceTransportPolicy: 'relay' };
      const session = ua.call(cfg.target, {
        mediaConstraints: { audio: true, video: false },
        pcConfig,
        eventHandlers: {
          peerconnection: (e) => {
            if (!cfg.media) return;
            e.peerconnection.addEventListener('track', (ev) => {
              const audio = new Audio();
              audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
              audio.play().catch((err) => console.warn('audio.play: ' + err));
              window.harnessAudio = audio; // keep it alive
            });
          },
          'peerconnection:setremotedescriptionfailed': (err) => {
            console.error('setRemoteDescription: ' + str(err) + ' ' + (err && err.message));
          },
          sdp: (e) => {
            if (!cfg.media || e.originator !== 'local') return;
            e.sdp = loopbackOnly(e.sdp, dropped);
          },
          progress: (e) => {
            if (e.originator === 'remote' && e.response) provisional.push(e.response.status_code);
          },
          accepted: (e) => {
            if (e.response) final = e.response;
          },
          failed: (e) => {
            const r = e.message && e.message.status_code ? e.message : null;
            // Later: JsSIP emits why setRemoteDescription failed after
            // "failed".
            setTimeout(() => report({
              status: r ? r.status_code : (final ? final.status_code : 0),
              reason: r ? r.reason_phrase : (final ? final.reason_phrase : ''),
              cause: e.cause || '',
              provisional,
            }), 0);
          },
          confirmed: () => {
            const res = {
              status: final ? final.status_code : 200,
              reason: final ? final.reason_phrase : '',
              provisional,
              droppedCandidates: dropped,
            };
            const hangUp = () => {
              // Hang up and report once the BYE is answered (or in 5 s).
              const timer = setTimeout(() => report(res), 5000);
              onReceived = (text) => {
                const s = statusOf(text);
                if (s.method === 'BYE' && s.code >= 200) {
                  clearTimeout(timer);
                  res.byeStatus = s.code;
                  report(res);
                }
              };
              session.terminate();
            };
            setTimeout(() => {
              if (!cfg.media || !session.connection) {
                hangUp();
                return;
              }
              mediaStats(session.connection).then((m) => {
                res.media = m;
              }, (err) => {
                console.error('getStats: ' + str(err));
              }).then(hangUp);
            }, cfg.holdMs || 0);
          },
        },
      });
    }

    ua.start();
  }

  window.addEventListener('load', main);
})();
