// Package faultproxy is a small TCP proxy for tests that injects network
// faults between a real client and a real server, without any hook inside
// the code under test.
//
// A Proxy listens on one loopback address (127.0.0.2, 127.0.0.3, ...) on the
// same port numbers as the server it fronts (an FTP control port plus its
// passive data port range, or an SSH port) and forwards every accepted
// connection to the same port on the target host. Because the port numbers
// are mirrored, an FTP client that connects its data channel to the control
// host (EPSV) is led through the proxy for data too.
//
// Faults are one-shot (or repeated a fixed number of times) and triggered by
// exact cumulative byte counts: Inject(Fault{Kind: Close, Dir: Downstream,
// After: 8 << 20}) forwards exactly 8 MiB from servers to clients, summed
// over every matching connection since the call, and then closes the
// connection that carried the 8 MiB-th byte. The kinds are Close (FIN both
// ways), Reset (RST both ways) and Blackhole (forward nothing more in either
// direction and keep both sockets open, like a NAT that forgot the flow,
// until Release or Close). SetRate throttles and SetLatency delays every
// connection, SetReadBuffer gives its sockets a small receive queue; Tap
// records the bytes of one port and direction, typically the FTP control
// stream. Stats counts the bytes forwarded and the bytes a Close or Reset
// dropped inside the proxy (received from a peer, never passed on), which a
// resuming sender has to send again.
//
// # Why not Toxiproxy
//
// Toxiproxy (github.com/Shopify/toxiproxy/v2) embeds in Go tests and was
// tried, but its toxics are per proxy and stateless: limit_data cuts every
// new connection again after N bytes, so a client that reconnects and
// resumes can never finish, and a byte budget cannot be shared between a
// control port and a range of passive ports. Its timeout toxic also closes
// the connection after a timeout instead of blackholing it forever. This
// package keeps those semantics explicit in a few hundred lines, with
// golang.org/x/time/rate for throttling.
//
// Only loopback traffic is intended: listen on 127.0.0.0/8 addresses (any of
// them works on Linux without configuration, see NextLoopback and
// NewLoopback) and forward to the server on 127.0.0.1.
package faultproxy
