package ftp

import "github.com/openhaul/haul/protocol"

// A STOR is one stream that the server writes in order.
var _ protocol.SequentialWriter = (*writer)(nil)

// Sequential marks FTP writers as protocol.SequentialWriter.
func (w *writer) Sequential() {}
