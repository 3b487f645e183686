// Package deploy holds no Go code: it is the folder of what an operator
// installs beside the binary, checked by its tests.
//
//   - grafana/sbc-dashboard.json: a Grafana dashboard over the SBC's
//     metrics (calls, signalling, defence, media, operator outputs).
//   - prometheus/sbc-alerts.yml: alert rules (promtool check rules), with
//     unit tests (prometheus/sbc-alerts_test.yml, promtool test rules).
//   - systemd/sbc.service: the unit, with the least privileges; the
//     drop-in systemd/sbc.service.d/kernel-defence.conf adds what XDP and
//     nftables need.
//   - wireshark/hep3.lua: a HEP3 dissector for Wireshark and tshark, which
//     have none of their own in Debian 12, to read the [hep] export.
//
// The tests check every metric name the rules and the dashboard use
// against docs/METRICS.md, run promtool and systemd-analyze where they are
// installed (in CI they must be: .ci/run installs them).
package deploy
