// Package topology owns what one side of the SBC may learn about the other.
//
// The SBC is a B2BUA: each call is two dialogs, and every message sent on a
// leg is built fresh by the SBC. This package holds the two pieces of that
// construction that are policy rather than protocol:
//
//   - Face: the address a realm's listener advertises (Via sent-by, Contact),
//     so a backend only ever sees the SBC's internal face and a carrier only
//     its external one.
//   - HeaderFilter: the allow-list of headers copied from one leg's message to
//     the other's. Everything not listed is dropped; headers that describe the
//     path or the dialog (Via, Route, Record-Route, Contact, From, To, Call-ID,
//     CSeq, Max-Forwards, Content-Length) are never copied, whatever the list
//     says, because the B2BUA generates its own. User-Agent and Server are
//     replaced by the SBC's own value.
//
// SDP is not rewritten here yet: media anchoring (and with it SDP origin and
// connection rewriting) comes with the media plane.
package topology
