# haul: build and test. `make test` is the one test command (README, .ci/run).

GO ?= go
TESTBED := integration/testbed

.PHONY: all build test unit compose-test install up down status bench bench-tree bench-rss

all: build

build:
	$(GO) build ./...

## test: install the servers (as root), start the test bed, gofmt + vet +
## go test -race ./..., and stop the test bed again (also on failure).
test:
	GO="$(GO)" $(TESTBED)/test-all.sh

## unit: go test without servers: the integration package runs no test (one
## line: [no tests to run]) even when a test bed is running (HAUL_TESTBED_OFF=1).
unit:
	@echo "make unit: no servers (HAUL_TESTBED_OFF=1): the integration package shows [no tests to run]; make test runs it"
	HAUL_TESTBED_OFF=1 $(GO) test -race -count=1 ./...

## compose-test: build the test bed image (base image by debootstrap when
## missing), bring docker-compose.yml up on 127.0.0.20, run integration tests
## against it, bring it down (also on failure). Root, Debian; see
## integration/testbed/compose-test.sh. Run by .ci/run after `make test`.
compose-test:
	GO="$(GO)" $(TESTBED)/compose-test.sh

## install: install vsftpd/sshd and unpack proftpd/pure-ftpd (root, Debian).
install:
	$(TESTBED)/install.sh

## up: install if needed, then start the test bed and leave it running.
up: install
	$(TESTBED)/up.sh

## down: stop the test bed.
down:
	$(TESTBED)/down.sh

## status: show which test bed servers run.
status:
	$(TESTBED)/status.sh

## bench: throughput of haul vs curl, lftp and OpenSSH sftp on the test bed
## (BENCH_SIZE, BENCH_RUNS, ...: bench/README.md). Not part of `make test`.
bench:
	GO="$(GO)" bench/run.sh

## bench-tree: many files (issue 12): haul put/get -r --parallel 8 of a
## 300-file tree vs rclone copy and lftp mirror, FTP and SFTP, logins per run
## and a rerun on a complete tree (BENCH_RUNS, ...: bench/README.md).
## Not part of `make test`.
bench-tree:
	GO="$(GO)" bench/tree.sh tree

## bench-rss: peak RSS of 8 parallel SFTP uploads of 64 MiB files, haul vs
## rclone (target for haul: <= 96 MiB). Not part of `make test`.
bench-rss:
	GO="$(GO)" bench/tree.sh rss
