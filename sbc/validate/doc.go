// Package validate is stage 2 of the SBC pipeline: the RFC 3261 sanity
// checks that sipgo's parser does not make, so that no invalid message is
// ever forwarded to a backend and each one gets the right answer.
//
// It is pure: it imports only sipgo's sip package, keeps no state, and
// does not allocate except to build the extra header of a 420 or 415.
//
// # Where to call it
//
//   - Raw(data, opt) in the transport read filter, on each UDP datagram
//     and each WebSocket message, before sipgo parses it. On TCP/TLS the
//     filter sees chunks of the stream, not messages: Frame(data, opt)
//     finds the end of each message of the stream first (or says the
//     stream cannot be framed), then Raw checks the message.
//   - Request(req, opt) in the request handler, after classify and before
//     admit, on every request from every transport.
//   - Response(res, opt) on every response, before it feeds the failure
//     tracker or is relayed to the other leg.
//
// Each returns nil for a valid message, else a *Result: answer with
// Result.Code, Result.Reason (and Result.Header when set), or, when
// Result.Drop is set, send nothing. Count every verdict under its
// Result.Why, a stable snake_case reason code; Whys lists them all.
//
// # Three fates of an invalid message
//
//   - answered: Request finds a syntax or semantic error in a parsed
//     request (400, 416, 420, 483, 505, 415, 406, 513);
//   - dropped by validate: every verdict of Raw (the read filter has
//     nothing to answer), every verdict of Response (an invalid response
//     is never answered, never relayed), and a verdict on an ACK (an ACK
//     is never answered);
//   - dropped as unparseable ("drop:parse" in the tests): when sipgo's
//     parser returns an error there is no message to answer, so the SBC
//     drops the bytes and counts them. We cannot answer what we cannot
//     parse, and answering malformed datagrams would also make the SBC a
//     reflector for spoofed sources. Raw catches most of these first,
//     with a precise Why.
//
// # Checks
//
// Raw: size (MaxMessageSize, 513), number of header fields (MaxHeaders),
// exact start-line shape (single SPs, no trailing SP, a 3-digit status),
// IPv6 Request-URI host without brackets, CRLF discipline (no bare CR or
// LF), header names, continuation lines, control characters outside a
// quoted-pair, Content-Length syntax and Content-Length beyond the
// datagram, a '?' outside <> in Contact/To/From, a ',' outside <> and
// quotes in To/From, a quoted string left open in To/From/Contact, a
// stray ';' or ',' in To/From/Contact/Via (sipgo silently drops empty
// parameters, so only the bytes show it); a Via and a CSeq, and a top Via
// branch with the magic cookie or (requests) a From tag, without which
// sipgo's transaction layer answers a stateless 400 itself or logs and
// drops a response, before the SBC sees the message.
//
// Request and Response: SIP/2.0 (505 for another version, 400 for
// garbage), method token, Request-URI (scheme, host, port, no headers
// part), mandatory To, From, Call-ID, CSeq, Via; at most one To, From,
// Call-ID, CSeq, Max-Forwards, Content-Length, Content-Type, Expires,
// Min-Expires, Session-Expires, Min-SE, RSeq, RAck, Retry-After (long and
// compact forms count as one header), one Contact in an INVITE; Call-ID
// syntax; CSeq method token, number up to 2^31-1, and equal to the
// request method; Max-Forwards up to 255 and not 0 (483); SIP/2.0 in
// every Via, and the top Via fully (transport, host, port; a branch that
// is the bare magic cookie is rejected); To and From URIs (sip, sips, tel or AllowedSchemes);
// Contact (sip or sips in requests, "*" only in a REGISTER with Expires 0,
// expires parameter up to 2^32-1); Expires and the other delta-seconds
// headers up to 2^32-1; RAck, Warning syntax; Content-Length equal to the
// body; Content-Type present with a body; control characters in every
// header (a bare LF inside a value would split into two headers at a
// backend); Require and Proxy-Require tags against SupportedExtensions
// (420 with Unsupported; not for ACK and CANCEL); the body type of
// INVITE, ACK, PRACK and UPDATE against BodyTypes (415 with Accept); an
// INVITE's Accept must allow application/sdp (406).
//
// Tolerated on purpose, for RFC 2543 peers and RFC 4475's valid
// messages: a missing Max-Forwards, a Via branch without the magic cookie
// or none at all, a From without tag, an INVITE without Contact, an
// unknown Via transport, a broadcast address in a lower Via of a response
// (the B2BUA never routes a response by Via), a non-GMT Date, the
// three-colon IPv6 form of RFC 5118 4.10. An unknown Authorization scheme
// is the registrar's to challenge, not ours.
//
// # sipgo v1.7.2 facts this package relies on
//
//   - Headers() keeps every header, duplicates included; the typed
//     accessors (To(), CSeq(), ...) return the last of a single header and
//     the first Via, Route and Record-Route. Body framing on a datagram
//     uses the last Content-Length; without one the rest of the datagram
//     is the body.
//   - The compact forms t f i m v l c are parsed into the same types as
//     the long forms (Name() is the long name). Other compact forms (k, s,
//     x, o, e, u, ...) stay generic headers named by their one letter.
//   - The request-line method is upper-cased, the CSeq method is not (we
//     compare them case-insensitively).
//   - A CR ends a line only when LF follows (else a parse error), but a
//     bare LF inside a line is kept inside the header value.
//   - LWS around '=' and ';' in parameters stays in the names and values
//     (RFC 4475 wsinv.dat: the To tag is stored under "   tag    "), and
//     trailing LWS stays in a URI host; a Via written with LWS around '/'
//     may lose its transport. Only the top Via is checked strictly.
//   - Rejected by the parser (drop:parse): a CSeq over 2^31-1, a negative
//     or overflowing Content-Length or Max-Forwards, a Content-Length
//     beyond the data, a URI scheme with a digit, '+', '-' or '.'
//     (soap.beep), LWS inside <>, an unterminated quoted display name, a
//     status code over 65535.
package validate
