// Package browser drives a real WebRTC signalling client in tests: headless
// chromium running JsSIP (from js/, built by npm ci) on a page served over
// HTTPS on 127.0.0.1. Register and Call connect it to a SIP-over-WebSocket
// (RFC 7118) server, register or call, and return the SIP outcome the page
// reported, with every SIP message the browser sent and received.
//
// The page's origin (the Origin of the WebSocket upgrade) is chosen by the
// test: chromium maps the origin's host to the page server, so
// https://app.example.test and https://evil.example.test are two origins
// served from loopback without DNS. Name one when the server checks
// Origins, since the default (https://127.0.0.1:<port>) has a port that is
// only known from Result.Origin afterwards:
//
//	const origin = "https://app.example.test"
//	// ... start the server with origin as its only allowed Origin ...
//	res, err := browser.Register(ctx, t, browser.RegisterOptions{
//		WSSURL:   "wss://127.0.0.1:8443",
//		URI:      "sip:alice@example.test",
//		Password: "secret",
//		Origin:   origin,
//	})
//	// err: the harness failed (ctx done, chromium died).
//	// res.Status == 200 && res.Registered: registered.
//	// res.Error == browser.ErrConnectionFailed: the upgrade was refused.
//
// A Call carries no media by default (its offer has no candidate). With
// CallOptions.Media it does: loopback candidates only, the call held for
// HoldFor, and the browser's getStats in Result.Media. Chromium still
// checks from its sockets on the machine's other addresses: a test that
// must keep ICE on loopback runs in a network namespace with only lo.
//
// Answer registers and takes calls instead: it answers each incoming
// INVITE (no media) and ends it as AnswerOptions.Hangups plans (the
// browser hangs up, or waits for the caller's BYE), then reports
// Result.Calls. The test places the calls from another goroutine once the
// registration is in place.
//
// Without chromium or the JsSIP bundle the tests that use it skip, except
// with CI=true where they fail.
package browser
