package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/openhaul/haul/transfer"
)

// Flags that apply to some schemes or one command only: given elsewhere
// they would be silently ignored, so they are refused.
var (
	sftpOnlyFlags = []string{"identity", "known-hosts", "insecure-host-key", "accept-new-host-key", "no-exec-hash"}
	ftpsOnlyFlags = []string{"ca-file"}
	putOnlyFlags  = []string{"direct"}
)

// check refuses what can never succeed, before anything touches the
// network: flags that do not apply to the command or to the URL's scheme,
// values out of range.
func (f *flags) check(cmd *cobra.Command, op string, ep transfer.Endpoint, local string) error {
	set := func(name string) bool { return cmd.Flags().Changed(name) }
	for _, name := range putOnlyFlags {
		if op != "put" && set(name) {
			return &usageError{msg: fmt.Sprintf("--%s applies to put only (a download always goes to LOCAL.part and is renamed after it verified)", name)}
		}
	}
	for _, name := range sftpOnlyFlags {
		if ep.Scheme != "sftp" && set(name) {
			return &usageError{msg: fmt.Sprintf("--%s applies to sftp:// URLs only, not %s://", name, ep.Scheme)}
		}
	}
	for _, name := range ftpsOnlyFlags {
		if ep.Scheme != "ftps" && ep.Scheme != "ftps+implicit" && set(name) {
			why := "plain FTP has no TLS"
			if ep.Scheme == "sftp" {
				why = "an SSH server is checked against --known-hosts"
			}
			return &usageError{msg: fmt.Sprintf("--%s applies to ftps:// and ftps+implicit:// URLs only, not %s:// (%s)", name, ep.Scheme, why)}
		}
	}
	if f.insecureHostKey && set("known-hosts") {
		return &usageError{msg: "--insecure-host-key and --known-hosts contradict each other"}
	}
	if f.insecureHostKey && f.acceptNewKey {
		return &usageError{msg: "--insecure-host-key and --accept-new-host-key contradict each other (the first checks no key, the second records a new one and refuses a changed one)"}
	}
	switch {
	case set("retries") && f.retries < 1:
		return &usageError{msg: fmt.Sprintf("--retries %d: want at least 1, the attempts in a row without progress (1: never retry; default 6)", f.retries)}
	case set("stall-timeout") && f.stallTimeout <= 0:
		return &usageError{msg: fmt.Sprintf("--stall-timeout %v: want a positive duration such as 30s (default 60s; the watchdog cannot be turned off: a server that stops sending would hang haul)", f.stallTimeout)}
	case set("timeout") && f.timeout <= 0:
		return &usageError{msg: fmt.Sprintf("--timeout %v: want a positive duration such as 2h (leave it out for no limit)", f.timeout)}
	case f.segments < 0 || f.segments > transfer.MaxSegments:
		return &usageError{msg: fmt.Sprintf("--segments %d: want 0 (auto) to %d; servers cap connections per client well below more (OpenSSH MaxStartups 10, vsftpd max_per_ip)", f.segments, transfer.MaxSegments)}
	case set("limit-rate") && f.limitRate == "":
		return &usageError{msg: "--limit-rate: empty value (want bytes per second such as 500K, 20M or 100MB)"}
	case set("min-segment-size") && f.minSegmentSize == "":
		return &usageError{msg: "--min-segment-size: empty value (want bytes such as 8M)"}
	case set("part-suffix") && (f.partSuffix == "" || strings.ContainsAny(f.partSuffix, `/\`)):
		return &usageError{msg: fmt.Sprintf("--part-suffix %q: want a non-empty suffix without a path separator", f.partSuffix)}
	}
	if local == "-" {
		switch {
		case op == "get" && f.jsonOut:
			return &usageError{msg: "--json prints on stdout, which get ... - fills with the file's bytes: leave out one of them"}
		case op == "put" && (ep.Path == "" || strings.HasSuffix(ep.Path, "/")):
			return &usageError{msg: "put - (stdin) needs the remote file's name in the URL, not a directory"}
		}
	}
	return nil
}
