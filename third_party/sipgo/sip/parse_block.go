package sip

import (
	"reflect"
	"strings"
)

// headerBlock holds the first header of each common kind of one parsed
// message: one allocation for them instead of one each (a message has at
// least Via, From, To, Call-ID and CSeq). A header kept keeps the block
// alive, as it keeps the message's header text (Parser.parseHeaders).
type headerBlock struct {
	via           ViaHeader
	from          FromHeader
	to            ToHeader
	callID        CallIDHeader
	cseq          CSeqHeader
	contact       ContactHeader
	contentLength ContentLengthHeader
	contentType   ContentTypeHeader
	maxForwards   MaxForwardsHeader
	used          blockSlots
	// kv is room for the params of the Via, From, To and Contact in the
	// block, handed out in order (kvUsed) with the capacity each may need.
	kv     [8]HeaderKV
	kvUsed int
}

// paramsRoom returns an empty params slice with room for as many params
// as text has ';' plus one, from b.kv while it lasts (nil: text has no
// params, or b.kv is used up).
func (b *headerBlock) paramsRoom(text string) HeaderParams {
	k := strings.Count(text, ";")
	if k == 0 {
		return nil
	}
	k++
	if b.kvUsed+k > len(b.kv) {
		return nil
	}
	p := b.kv[b.kvUsed : b.kvUsed : b.kvUsed+k]
	b.kvUsed += k
	return p
}

// blockSlots is a set of the headers a headerBlock holds.
type blockSlots uint16

const (
	slotVia blockSlots = 1 << iota
	slotFrom
	slotTo
	slotCallID
	slotCSeq
	slotContact
	slotContentLength
	slotContentType
	slotMaxForwards
)

// blockDefaults are the headers a block may hold, with the parser each
// one's slot stands for.
var blockDefaults = []struct {
	name string
	slot blockSlots
	fn   HeaderParser
}{
	{"via", slotVia, headerParserVia},
	{"from", slotFrom, headerParserFrom},
	{"to", slotTo, headerParserTo},
	{"call-id", slotCallID, headerParserCallId},
	{"cseq", slotCSeq, headerParserCSeq},
	{"contact", slotContact, headerParserContact},
	{"content-length", slotContentLength, headerParserContentLength},
	{"content-type", slotContentType, headerParserContentType},
	{"max-forwards", slotMaxForwards, headerParserMaxForwards},
}

// blockSlotsOf returns the slots whose header the parsers m parse with
// this package's own parser (a parser set by WithHeadersParsers is used
// as it is). Parsers changed in m after this are not seen.
func blockSlotsOf(m HeadersParser) blockSlots {
	var s blockSlots
	for _, d := range blockDefaults {
		if f, ok := m[d.name]; ok && f != nil && reflect.ValueOf(f).Pointer() == reflect.ValueOf(d.fn).Pointer() {
			s |= d.slot
		}
	}
	return s
}

// slotOf returns the slot of a lower-case header name, 0 for none.
// knownHdrSlot is slotOf of each known header name.
var knownHdrSlot = func() (t [numKnownHdr]blockSlots) {
	for id, name := range knownHdrName {
		t[id] = slotOf(name)
	}
	return t
}()

func slotOf(lowerName []byte) blockSlots {
	switch string(lowerName) {
	case "via":
		return slotVia
	case "from":
		return slotFrom
	case "to":
		return slotTo
	case "call-id":
		return slotCallID
	case "cseq":
		return slotCSeq
	case "contact":
		return slotContact
	case "content-length":
		return slotContentLength
	case "content-type":
		return slotContentType
	case "max-forwards":
		return slotMaxForwards
	}
	return 0
}

// parse parses text into the slot's header, as the slot's parser would
// into a header of its own, and marks the slot used.
func (b *headerBlock) parse(slot blockSlots, text string) (Header, error) {
	b.used |= slot
	switch slot {
	case slotVia:
		b.via.Params = b.paramsRoom(text)
		return &b.via, parseViaHeader(text, &b.via)
	case slotFrom:
		b.from.Params = b.paramsRoom(text)
		return &b.from, parseFromHeader(text, &b.from)
	case slotTo:
		b.to.Params = b.paramsRoom(text)
		return &b.to, parseToHeader(text, &b.to)
	case slotCallID:
		return &b.callID, parseCallIdHeader(text, &b.callID)
	case slotCSeq:
		return &b.cseq, parseCSeqHeader(text, &b.cseq)
	case slotContact:
		b.contact.Params = b.paramsRoom(text)
		return &b.contact, parseContactHeader(text, &b.contact)
	case slotContentLength:
		return &b.contentLength, parseContentLengthHeader(text, &b.contentLength)
	case slotContentType:
		return &b.contentType, parseContentTypeHeader(text, &b.contentType)
	case slotMaxForwards:
		return &b.maxForwards, parseMaxForwardsHeader(text, &b.maxForwards)
	}
	panic("sip: headerBlock.parse: no such slot")
}
