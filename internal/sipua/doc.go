// Package sipua is a small, scriptable SIP user agent library built on
// sipgo, for the peers an SBC talks to: the SBC's in-process integration
// tests, the built-in backend and caller of `sbc demo`, and load and attack
// generators.
//
// It owns two roles and a helper:
//
//   - [Backend], a UAS playing a PBX. Each incoming INVITE is handled by a
//     [Plan] returned by BackendOptions.Answer: provisional responses
//     (optionally reliable, RFC 3262), a delay, a final code, or no response
//     at all; the backend can hang up by itself, answers re-INVITE, UPDATE,
//     INFO, MESSAGE, NOTIFY and REFER, and answers OPTIONS with a code that
//     can be changed at run time. It keeps a per-call state table
//     ([Backend.Calls], [Backend.WaitCall]) and can send BYE, re-INVITE and
//     other requests in a dialog.
//   - [Caller], a UAC playing a carrier, bound to a chosen local address.
//     [Caller.Dial] places a call and returns a [Call] that collects every
//     response, PRACKs reliable provisionals, ACKs the 2xx, and can CANCEL,
//     BYE, re-INVITE, UPDATE, INFO, MESSAGE and REFER. [Caller.Send] writes
//     hand-crafted bytes for torture and attack tests.
//   - [SDP], a generator of minimal valid audio session descriptions, used
//     for offers, answers and hold (sendonly, inactive).
//
// Both roles record every message they receive, as raw wire text, before
// sipgo parses it ([Msg], Received, WaitFor), so tests can assert what
// reached them, including what must not have leaked through an SBC.
// Waiting is done on condition signals, never on sleeps.
//
// Everything is meant for loopback. The package changes no global state of
// sipgo: loggers are passed per user agent (nil discards sipgo's logs, which
// otherwise include whole packets on parse errors).
package sipua
