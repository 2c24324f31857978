package doctor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/openhaul/haul/transfer"
)

// procKeepAlive is where Linux keeps its TCP keepalive defaults.
const procKeepAlive = "/proc/sys/net/ipv4/tcp_keepalive_"

// localKeepAlive reports the keepalive haul sets on its sockets and the
// operating system's defaults, which other programs get.
func (d *doc) localKeepAlive() {
	ka := d.cfg.KeepAlive
	if ka == 0 {
		ka = transfer.DefaultKeepAlive
	}
	f := Finding{ID: "local-keepalive", Status: OK, Data: map[string]any{}}
	haul := "off (Config.KeepAlive < 0)"
	if ka > 0 {
		haul = fmt.Sprintf("TCP keepalive after %v idle, every %v, 4 probes", ka, ka)
		if d.ep.Scheme == "sftp" {
			haul = fmt.Sprintf("SSH keepalive@openssh.com every %v (connection closed after 2.5 intervals without a byte), TCP keepalive 15s/15s/4", ka)
		}
		f.Data["haul_keepalive_seconds"] = ka.Seconds()
	} else {
		f.Status = Warn
		f.Fix = "leave Config.KeepAlive at its default (15s): without keepalive, a NAT or firewall forgets an idle control connection during a long transfer"
	}
	var osVals []string
	for _, k := range []string{"time", "intvl", "probes"} {
		b, err := readSmall(procKeepAlive + k)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		osVals = append(osVals, "tcp_keepalive_"+k+"="+v)
		if n, err := strconv.Atoi(v); err == nil {
			f.Data["os_tcp_keepalive_"+k] = n
		}
	}
	f.Summary = "haul: " + haul
	if len(osVals) > 0 {
		f.Evidence = "OS defaults (for programs that enable keepalive without setting it): " + strings.Join(osVals, " ")
		if t, ok := f.Data["os_tcp_keepalive_time"].(int); ok && time.Duration(t)*time.Second > 5*time.Minute {
			f.Evidence += fmt.Sprintf(" — %ds is longer than most NAT idle timeouts, which haul's own setting does not depend on", t)
		}
	}
	d.rep.add(f)
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := f.Read(b)
	if n == 0 {
		return nil, err
	}
	return b[:n], nil
}
