package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"put", "only-one"},
		{"bogus"},
		{"get", "--retries", "x", "ftp://h/f", "l"},
		{"get", "http://h/f", "l"},
		{"put", "--json", "l", "ftp://h/a%0Ab"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitUsage {
			t.Errorf("%v: exit %d, stderr %s", args, code, errb.String())
		}
	}
}

func TestJSONOnFailureHasNoPassword(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"put", "--json", "/nonexistent/file", "ftp://u:s3cret@127.0.0.1:1/f"}, &out, &errb)
	if code == exitOK {
		t.Fatal("want failure")
	}
	if strings.Contains(out.String()+errb.String(), "s3cret") {
		t.Fatalf("password leaked: %s %s", out.String(), errb.String())
	}
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %q", out.String())
	}
	if rep.OK || rep.Op != "put" || rep.Error == nil || rep.URL != "ftp://u@127.0.0.1:1/f" {
		t.Fatalf("report %+v", rep)
	}
}
