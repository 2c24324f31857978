package demo_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/openhaul/haul/internal/demo"
)

// Start a lab, run the scenario with a Runner that would call the haul
// command line, print the table, and close the lab (which removes its
// directory).
func Example() {
	lab, err := demo.Start(demo.Options{Size: 8 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer lab.Close()
	fmt.Println("FTP:", lab.FTPURL, "SFTP:", lab.SFTPURL, "known_hosts:", lab.KnownHostsFile)
	haul := func(args []string, stdout io.Writer) int {
		// cmd/haul calls run(args, stdin, stdout, os.Stderr) here.
		return 1
	}
	rows, err := lab.Run(context.Background(), haul, os.Stderr)
	if err != nil {
		log.Print(err)
	}
	_ = demo.WriteTable(os.Stdout, rows)
}
