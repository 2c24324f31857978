package doctor_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/openhaul/haul/doctor"
	"github.com/openhaul/haul/transfer"
)

// Diagnose a server read-only, then with the probes that hold connections
// idle and count the connections it accepts.
func ExampleRun() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := transfer.Config{Password: os.Getenv("HAUL_PASSWORD")}
	rep, err := doctor.Run(ctx, "ftp://user@ftp.example.com/", cfg, doctor.Options{
		ProbeIdle:  30 * time.Second,
		ProbeLimit: 8,
	})
	if err != nil {
		fmt.Println("cannot start:", err) // a bad URL or bad options
		return
	}
	_ = rep.WriteText(os.Stdout)
	if f, ok := rep.Find("pasv-address"); ok && f.Status == doctor.Warn {
		fmt.Println("fix:", f.Fix)
	}
	if rep.Err != nil || rep.Failed() {
		os.Exit(1)
	}
}
