-- HEP3 (Homer Encapsulation Protocol version 3) for Wireshark and tshark,
-- written from the sipcapture HEP3 specification (github.com/sipcapture/HEP).
-- Debian's Wireshark (4.0) has no HEP dissector; this one decodes the
-- generic chunks and hands a SIP payload (protocol type 1) to Wireshark's
-- SIP dissector.
--
--   tshark -X lua_script:deploy/wireshark/hep3.lua -d udp.port==9060,hep3 -r capture.pcap \
--     -T fields -e hep3.correlation_id -e hep3.src_ip -e hep3.src_port -e sip.Call-ID
--
-- In Wireshark: copy it to ~/.local/lib/wireshark/plugins/ and use
-- "Decode As… > UDP port > HEP3" (or set the port in the preferences).

local hep3 = Proto("hep3", "HEP3 (Homer Encapsulation Protocol v3)")
local f = hep3.fields
f.version = ProtoField.string("hep3.version", "Magic")
f.length = ProtoField.uint16("hep3.length", "Total length")
f.vendor = ProtoField.uint16("hep3.chunk.vendor", "Chunk vendor", base.HEX)
f.ctype = ProtoField.uint16("hep3.chunk.type", "Chunk type", base.HEX)
f.clen = ProtoField.uint16("hep3.chunk.length", "Chunk length")
f.family = ProtoField.uint8("hep3.ip_family", "IP family")
f.ip_proto = ProtoField.uint8("hep3.ip_proto", "IP protocol")
f.src_ip = ProtoField.ipv4("hep3.src_ip", "Source IPv4")
f.dst_ip = ProtoField.ipv4("hep3.dst_ip", "Destination IPv4")
f.src_ip6 = ProtoField.ipv6("hep3.src_ip6", "Source IPv6")
f.dst_ip6 = ProtoField.ipv6("hep3.dst_ip6", "Destination IPv6")
f.src_port = ProtoField.uint16("hep3.src_port", "Source port")
f.dst_port = ProtoField.uint16("hep3.dst_port", "Destination port")
f.ts_sec = ProtoField.uint32("hep3.ts_sec", "Timestamp (s)")
f.ts_usec = ProtoField.uint32("hep3.ts_usec", "Timestamp (µs)")
f.proto_type = ProtoField.uint8("hep3.proto_type", "Protocol type")
f.agent_id = ProtoField.uint32("hep3.agent_id", "Capture agent id")
f.auth_key = ProtoField.string("hep3.auth_key", "Authentication key")
f.payload = ProtoField.bytes("hep3.payload", "Payload")
f.correlation_id = ProtoField.string("hep3.correlation_id", "Correlation id")

local by_type = {
  [0x0001] = f.family, [0x0002] = f.ip_proto, [0x0003] = f.src_ip, [0x0004] = f.dst_ip,
  [0x0005] = f.src_ip6, [0x0006] = f.dst_ip6, [0x0007] = f.src_port, [0x0008] = f.dst_port,
  [0x0009] = f.ts_sec, [0x000a] = f.ts_usec, [0x000b] = f.proto_type, [0x000c] = f.agent_id,
  [0x000e] = f.auth_key, [0x000f] = f.payload, [0x0011] = f.correlation_id,
}

local sip = Dissector.get("sip")

function hep3.dissector(buf, pinfo, tree)
  if buf:len() < 6 or buf(0, 4):string() ~= "HEP3" then
    return 0
  end
  local total = buf(4, 2):uint()
  if total < 6 or total > buf:len() then
    return 0
  end
  pinfo.cols.protocol = "HEP3"
  local t = tree:add(hep3, buf(0, total))
  t:add(f.version, buf(0, 4))
  t:add(f.length, buf(4, 2))
  local off, payload, ptype = 6, nil, nil
  while off + 6 <= total do
    local vendor = buf(off, 2):uint()
    local ctype = buf(off + 2, 2):uint()
    local clen = buf(off + 4, 2):uint()
    if clen < 6 or off + clen > total then
      t:add_expert_info(PI_MALFORMED, PI_ERROR, "bad chunk length")
      break
    end
    if clen > 6 then
      local v = buf(off + 6, clen - 6)
      local field = vendor == 0 and by_type[ctype] or nil
      if field then
        t:add(field, v)
      else
        local c = t:add(buf(off, clen), string.format("Chunk vendor 0x%04x type 0x%04x", vendor, ctype))
        c:add(f.vendor, buf(off, 2))
        c:add(f.ctype, buf(off + 2, 2))
        c:add(f.clen, buf(off + 4, 2))
      end
      if vendor == 0 and ctype == 0x000f then payload = v end
      if vendor == 0 and ctype == 0x000b then ptype = v:uint() end
    end
    off = off + clen
  end
  if payload and ptype == 1 and sip then
    sip:call(payload:tvb(), pinfo, tree)
  end
  return total
end

DissectorTable.get("udp.port"):add_for_decode_as(hep3)
DissectorTable.get("tcp.port"):add_for_decode_as(hep3)
