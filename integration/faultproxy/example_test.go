package faultproxy_test

import (
	"fmt"
	"log"

	"github.com/openhaul/haul/integration/faultproxy"
)

// An FTP server on 127.0.0.1 with control port 2121 and passive ports
// 30000-30019 is fronted on a fresh loopback address. A client that logs in
// to p.Addr(2121) and uses EPSV has its data connections proxied too; the
// first 8 MiB of downloads (over all data connections) go through, then the
// data connection carrying them is closed.
func Example() {
	ports := append([]int{2121}, faultproxy.PortRange(30000, 30019)...)
	p, err := faultproxy.NewLoopback("127.0.0.1", ports...)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctl := p.Tap(2121, faultproxy.Upstream) // the FTP commands, as sent
	cut := p.Inject(faultproxy.Fault{
		Kind:  faultproxy.Close,
		Dir:   faultproxy.Downstream,
		Ports: faultproxy.PortRange(30000, 30019),
		After: 8 << 20,
	})
	fmt.Println("connect to", p.Addr(2121))
	// ... run the client, then:
	select {
	case <-cut.Fired():
	default:
	}
	_ = ctl.String()
}
