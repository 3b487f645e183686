// Package baresip runs baresip, a real SIP user agent with real media, as
// a headless test peer on loopback: it sends a sine tone, and writes what
// it decodes from the network to a WAV file that [Measure] analyses with
// sox.
//
// It uses the Debian 12 packages baresip-core (baresip 1.0.0 and its
// modules in /usr/lib/baresip/modules) and sox. [Available] reports whether
// they are installed; [Start] skips the test when they are not, except in
// CI (CI=true), where their absence fails it.
//
// # The user agent
//
// Start writes a configuration directory in t.TempDir (config, accounts)
// and runs `baresip -f DIR -s -t SECONDS -e /sipstat [-e "/dial URI"]`:
//
//   - one account, sip:USER@IP, regint=0 (no registration),
//     answermode=auto (incoming calls are answered at once), PCMU only,
//     and mediaenc when Options.MediaEnc is set ("srtp", "srtp-mand",
//     "srtp-mandf", "dtls_srtp");
//   - SIP on IP port 0 (baresip binds UDP, TCP and TLS on ports of the
//     kernel's choice; the UDP one is read back from /sipstat, of the
//     debug_cmd module, before Start returns: [UA.SIPAddr]);
//   - RTP on IP, rtcp-mux, ports picked at random in Options.RTPPorts
//     (baresip retries a port in use);
//   - audio source ausine (the tone; it needs 48 kHz stereo, resampled to
//     PCMU's 8 kHz mono), no audio player: what arrives is still
//     decrypted, decoded and passed through the filters;
//   - the sndfile filter, which dumps the encoded (sent) and decoded
//     (received) audio of each call to DIR/dump/dump-TIME-enc.wav and
//     -dec.wav ([UA.DecodedWAV]);
//   - rtp_stats: at the end of a call baresip prints its packet and error
//     counts per direction ([UA.RTPStats]); packets that fail SRTP
//     authentication are dropped before they are counted, and logged as
//     "srtp: failed to decrypt" ([UA.DecryptFailures]);
//   - -s: a SIP trace of every message sent and received ([UA.SIPTrace],
//     [UA.Received]).
//
// With Options.Dial the agent calls that URI at once; it hangs up (BYE)
// when its -t time (Options.Quit) runs out, and exits. Without it, it
// answers calls until [UA.Stop] or Options.Quit.
//
// With Options.Registrar the account registers instead (regint, digest
// with Options.Password): its AoR is sip:User@Domain and all its requests
// go to Registrar (baresip's outbound proxy) over Options.Transport (udp,
// tcp, tls; Options.CAFile is sip_cafile, which baresip 1.0.0 does not
// enforce); Options.AnswerMode
// "manual" makes it ring instead of answering. It refreshes at 90 % of
// the expiry the 200 grants its Contact, and unregisters when it quits
// (UA.Stop). Over tcp and tls libre 1.0.0 does not bind its outgoing
// connections: they come from 127.0.0.1 on loopback, whatever IP is.
//
// baresip 1.0.0 binds TLS as well as UDP and TCP; with port 0 for all
// three, several agents never collide.
package baresip
