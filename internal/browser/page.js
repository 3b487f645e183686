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
      if (cfg.action === 'register' || cfg.register) {
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
      } else {
        call();
      }
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
      const session = ua.call(cfg.target, {
        mediaConstraints: { audio: true, video: false },
        // No TURN server and relay only: ICE gathers no candidate, so the
        // offer names no address of this machine and no check is sent.
        pcConfig: { iceServers: [], iceTransportPolicy: 'relay' },
        eventHandlers: {
          progress: (e) => {
            if (e.originator === 'remote' && e.response) provisional.push(e.response.status_code);
          },
          accepted: (e) => {
            if (e.response) final = e.response;
          },
          failed: (e) => {
            const r = e.message && e.message.status_code ? e.message : null;
            report({
              status: r ? r.status_code : (final ? final.status_code : 0),
              reason: r ? r.reason_phrase : (final ? final.reason_phrase : ''),
              cause: e.cause || '',
              provisional,
            });
          },
          confirmed: () => {
            const res = {
              status: final ? final.status_code : 200,
              reason: final ? final.reason_phrase : '',
              provisional,
            };
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
          },
        },
      });
    }

    ua.start();
  }

  window.addEventListener('load', main);
})();
