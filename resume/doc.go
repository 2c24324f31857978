// Package resume is haul's transfer engine. It knows nothing of FTP or
// SFTP: it drives any protocol.Session through attempts until a file has
// moved completely and verifiably.
//
// Each attempt dials a new session, asks the remote where things stand
// (the remote is authoritative on every attempt), opens a reader or writer
// at that exact offset and copies, with a byte meter feeding a progress
// callback and a stall watchdog. A failed attempt is classified: transient
// failures (protocol.ErrTransient) are retried after an exponential backoff
// with jitter (github.com/cenkalti/backoff/v4, without its 15-minute
// elapsed-time cap), reset whenever an attempt made progress; everything
// else (authentication, not found, permission, no space) ends the transfer
// at once, keeping what was transferred. Cancelling the context closes the
// connections and returns promptly.
//
// The engine copies one byte range per attempt over one session; the range
// is [offset, size) today, so that one file can later move as several
// ranges over several sessions.
package resume
