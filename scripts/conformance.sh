#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite against a freshly started
# `mlambda registry serve`, and prints the suite's pass/fail summary.
#
#   scripts/conformance.sh SUITE_DIR [MLAMBDA_BINARY]
#
# SUITE_DIR holds the suite's Go sources: the `conformance/` folder of
# https://github.com/opencontainers/distribution-spec at the wanted ref, e.g.
#   git clone --depth 1 --branch v1.1.1 https://github.com/opencontainers/distribution-spec
#   scripts/conformance.sh distribution-spec/conformance
# This script never downloads anything (the suite's sources are third-party code and
# are never committed here). MLAMBDA_BINARY defaults to
# ${CARGO_TARGET_DIR:-target}/debug/mlambda.
#
# Two layouts of the suite are known:
# - the ginkgo suite of the v1.x releases (00_conformance_suite_test.go, setup.go, ...):
#   built with `go test -c`. When its Go modules cannot be fetched (no network, or a Go
#   older than its go.mod wants, as Debian 12's Go 1.19 with no ginkgo v2 package), it is
#   built offline in GOPATH mode from Debian's packages instead:
#     apt-get install golang-go golang-github-onsi-ginkgo-dev golang-gomega-dev \
#       golang-github-opencontainers-go-digest-dev golang-github-google-uuid-dev \
#       golang-github-go-resty-resty-dev golang-golang-x-net-dev
#   with three substitutes written below: ginkgo v1 in place of v2 (the suite only uses
#   Describe/Context/Specify/Skip, which v1 has), a small HTTP client with the API of
#   github.com/bloodorangeio/reggie (not packaged by Debian), and a plain-text reporter in
#   place of reporter.go (HTML report). The tests themselves are compiled unchanged.
# - the newer suite of the main branch (main.go, config.go, run.go, ...): a plain program
#   built with `go build`; it needs Go >= 1.24 (crypto/rand.Text, strings.SplitSeq) and its
#   modules (github.com/goccy/go-yaml, image-spec 1.1, the spec's own specs-go), so not
#   Debian 12's Go 1.19 offline. It is configured by environment (OCI_REGISTRY, OCI_TLS,
#   OCI_REPO1, OCI_REPO2, OCI_RESULTS_DIR; see its config.go) and prints its own summary.
#
# Environment: REGISTRY_PORT=N runs the suite against a registry already listening on
# 127.0.0.1:N instead of starting mlambda (to compare with another registry),
# OCI_AUTOMATIC_CROSSMOUNT (default 1: our server also mounts without `from`),
# OCI_DEBUG=1 for request logs, KEEP=1 to keep the scratch directory.
set -euo pipefail

suite=$(cd "${1:?usage: $0 SUITE_DIR [MLAMBDA_BINARY]}" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
mlambda=${2:-${CARGO_TARGET_DIR:-$repo/target}/debug/mlambda}
[ -n "${REGISTRY_PORT:-}" ] || [ -x "$mlambda" ] || { echo "no mlambda binary at $mlambda (cargo build first)" >&2; exit 2; }
command -v go >/dev/null || { echo "needs Go (apt-get install golang-go)" >&2; exit 2; }

work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ "${KEEP:-0}" = 1 ] && echo "scratch kept in $work" || rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: bind port 0, read what the OS gave, release it.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_server() {
    local port=$1
    mkdir -p "$work/registry"
    "$mlambda" registry serve --root "$work/registry" --addr "127.0.0.1:$port" \
        >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && return 0
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}

# --- substitutes for the offline build of the ginkgo suite ---------------------------

write_reggie() {
    local dir=$1/src/github.com/bloodorangeio/reggie
    mkdir -p "$dir"
    cat >"$dir/reggie.go" <<'EOF'
// Package reggie is a minimal stand-in for github.com/bloodorangeio/reggie with the
// part of its API the conformance suite uses, written for mlambda's conformance.sh.
package reggie

import (
	"crypto/tls"
	"encoding/json"
	"net/url"
	"strings"

	"github.com/go-resty/resty/v2"
)

const (
	GET     = resty.MethodGet
	PUT     = resty.MethodPut
	PATCH   = resty.MethodPatch
	DELETE  = resty.MethodDelete
	POST    = resty.MethodPost
	HEAD    = resty.MethodHead
	OPTIONS = resty.MethodOptions
)

type Config struct {
	Address, DefaultName, Username, Password, UserAgent, AuthScope string
	Debug, Insecure                                                bool
}

type Client struct {
	*resty.Client
	Config *Config
}

type clientOption func(*Config)

func WithDefaultName(v string) clientOption  { return func(c *Config) { c.DefaultName = v } }
func WithUserAgent(v string) clientOption    { return func(c *Config) { c.UserAgent = v } }
func WithAuthScope(v string) clientOption    { return func(c *Config) { c.AuthScope = v } }
func WithDebug(v bool) clientOption          { return func(c *Config) { c.Debug = v } }
func WithInsecureSkipTLSVerify(v bool) clientOption {
	return func(c *Config) { c.Insecure = v }
}
func WithUsernamePassword(u, p string) clientOption {
	return func(c *Config) { c.Username, c.Password = u, p }
}

func NewClient(address string, opts ...clientOption) (*Client, error) {
	cfg := &Config{Address: strings.TrimSuffix(address, "/")}
	for _, o := range opts {
		o(cfg)
	}
	rc := resty.New().SetDebug(cfg.Debug)
	if cfg.Insecure {
		rc.SetTLSClientConfig(&tls.Config{InsecureSkipVerify: true})
	}
	if cfg.Username != "" {
		rc.SetBasicAuth(cfg.Username, cfg.Password)
	}
	return &Client{Client: rc, Config: cfg}, nil
}

type requestConfig struct{ name, reference, digest, sessionID string }

type requestOption func(*requestConfig)

func WithName(v string) requestOption      { return func(r *requestConfig) { r.name = v } }
func WithReference(v string) requestOption { return func(r *requestConfig) { r.reference = v } }
func WithDigest(v string) requestOption    { return func(r *requestConfig) { r.digest = v } }
func WithSessionID(v string) requestOption { return func(r *requestConfig) { r.sessionID = v } }

type Request struct{ *resty.Request }

func (c *Client) NewRequest(method, path string, opts ...requestOption) *Request {
	rc := requestConfig{name: c.Config.DefaultName}
	for _, o := range opts {
		o(&rc)
	}
	path = strings.NewReplacer("<name>", rc.name, "<reference>", rc.reference,
		"<digest>", rc.digest, "<session_id>", rc.sessionID).Replace(path)
	req := c.Client.R()
	req.Method = method
	req.URL = c.Config.Address + path
	if c.Config.UserAgent != "" {
		req.SetHeader("User-Agent", c.Config.UserAgent)
	}
	return &Request{req}
}

func (r *Request) SetHeader(k, v string) *Request     { r.Request.SetHeader(k, v); return r }
func (r *Request) SetQueryParam(k, v string) *Request { r.Request.SetQueryParam(k, v); return r }
func (r *Request) SetBody(b interface{}) *Request     { r.Request.SetBody(b); return r }

func (c *Client) Do(req *Request) (*Response, error) {
	resp, err := req.Request.Execute(req.Method, req.URL)
	if err != nil {
		return nil, err
	}
	return &Response{resp}, nil
}

type Response struct{ *resty.Response }

// GetRelativeLocation is the Location header's path and query.
func (r *Response) GetRelativeLocation() string {
	u, err := url.Parse(r.Header().Get("Location"))
	if err != nil {
		return ""
	}
	p := u.Path
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	return p
}

// GetAbsoluteLocation is the Location header resolved against the request's URL.
func (r *Response) GetAbsoluteLocation() string {
	loc := r.Header().Get("Location")
	u, err := url.Parse(loc)
	if err != nil || loc == "" {
		return ""
	}
	base, err := url.Parse(r.Response.Request.URL)
	if err != nil {
		return loc
	}
	return base.ResolveReference(u).String()
}

type ErrorInfo struct {
	Code    string      `json:"code"`
	Message string      `json:"message"`
	Detail  interface{} `json:"detail"`
}

func (r *Response) Errors() ([]ErrorInfo, error) {
	var body struct {
		Errors []ErrorInfo `json:"errors"`
	}
	if err := json.Unmarshal(r.Body(), &body); err != nil {
		return nil, err
	}
	return body.Errors, nil
}

func (r *Response) IsUnauthorized() bool { return r.StatusCode() == 401 }
EOF
}

write_ginkgo_v1_glue() {
    local pkg=$1
    # ginkgo v1 in place of v2; v2's formatter only colours warnings.
    sed -i -e 's#"github.com/onsi/ginkgo/v2"#"github.com/onsi/ginkgo"#' \
        -e '\#"github.com/onsi/ginkgo/v2/formatter"#d' \
        -e 's#formatter\.Fi(2, #formatterFi(#g' "$pkg"/*.go
    rm -f "$pkg/00_conformance_suite_test.go" "$pkg/reporter.go"
    cat >"$pkg/zz_mlambda_suite_test.go" <<'EOF'
package conformance

import (
	"testing"

	g "github.com/onsi/ginkgo"
	. "github.com/onsi/gomega"
)

func TestConformance(t *testing.T) {
	g.Describe(suiteDescription, func() {
		test01Pull()
		test02Push()
		test03ContentDiscovery()
		test04ContentManagement()
	})
	RegisterFailHandler(g.Fail)
	g.RunSpecs(t, suiteDescription)
}
EOF
    cat >"$pkg/zz_mlambda_reporter.go" <<'EOF'
package conformance

import (
	"fmt"
	"os"
)

// httpDebugWriter shows the HTTP exchanges only with OCI_DEBUG.
type httpDebugWriter struct{ debug bool }

func newHTTPDebugWriter(debug bool) *httpDebugWriter { return &httpDebugWriter{debug: debug} }

func (w *httpDebugWriter) Write(b []byte) (int, error) {
	if w.debug {
		return os.Stderr.Write(b)
	}
	return len(b), nil
}

type httpDebugLogger struct{ w *httpDebugWriter }

func newHTTPDebugLogger(w *httpDebugWriter) *httpDebugLogger { return &httpDebugLogger{w: w} }

func (l *httpDebugLogger) Errorf(format string, v ...interface{}) { fmt.Fprintf(l.w, format+"\n", v...) }
func (l *httpDebugLogger) Warnf(format string, v ...interface{})  { fmt.Fprintf(l.w, format+"\n", v...) }
func (l *httpDebugLogger) Debugf(format string, v ...interface{}) { fmt.Fprintf(l.w, format+"\n", v...) }

func formatterFi(format string, args ...interface{}) string { return fmt.Sprintf(format, args...) }
EOF
}

build_ginkgo_offline() {
    local gopath=$work/gopath pkg=$work/gopath/src/conformance
    mkdir -p "$pkg" "$gopath/src/github.com/go-resty/resty"
    cp "$suite"/*.go "$pkg/"
    ln -s /usr/share/gocode/src/github.com/go-resty/resty "$gopath/src/github.com/go-resty/resty/v2"
    write_reggie "$gopath"
    write_ginkgo_v1_glue "$pkg"
    (cd "$pkg" && GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= \
        go test -c -o "$work/conformance.test" .)
}

build_ginkgo() {
    mkdir -p "$work/src"
    cp -r "$suite"/. "$work/src/"
    if (cd "$work/src" && go test -c -o "$work/conformance.test" . ) 2>"$work/build.log"; then
        return 0
    fi
    echo "module build failed ($(tail -1 "$work/build.log")); building offline from Debian's packages"
    build_ginkgo_offline
}

run_ginkgo() {
    local port=$1
    (
        cd "$work"
        export OCI_ROOT_URL="http://127.0.0.1:$port" OCI_NAMESPACE=conformance/repo1 \
            OCI_CROSSMOUNT_NAMESPACE=conformance/repo2 OCI_TEST_PULL=1 OCI_TEST_PUSH=1 \
            OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1 \
            OCI_AUTOMATIC_CROSSMOUNT=${OCI_AUTOMATIC_CROSSMOUNT:-1} OCI_REPORT_DIR="$work" \
            ACK_GINKGO_DEPRECATIONS=1.16.5 ACK_GINKGO_RC=true
        ./conformance.test -ginkgo.noColor 2>&1 | tee "$work/suite.log" || true
    )
    echo "== summary"
    grep -E '^\[Fail\]|Ran [0-9]+ of [0-9]+ Specs|Passed \|' "$work/suite.log" || true
    grep -q '^SUCCESS!' "$work/suite.log"
}

# --- the newer suite (main branch) ---------------------------------------------------

# The main-branch suite uses Go 1.24's library: say so rather than fail to compile.
check_go_for_main() {
    local version minor
    version=$(go env GOVERSION)
    minor=$(echo "$version" | sed -E 's/^go1\.([0-9]+).*/\1/')
    if ! [ "$minor" -ge 24 ] 2>/dev/null; then
        echo "the main-branch suite needs Go >= 1.24; this is $version" >&2
        exit 2
    fi
}

run_main() {
    local port=$1
    mkdir -p "$work/src"
    cp -r "$suite"/. "$work/src/"
    (cd "$work/src" && go build -o "$work/conformance" .)
    (
        cd "$work"
        export OCI_REGISTRY="127.0.0.1:$port" OCI_TLS=disabled OCI_REPO1=conformance/repo1 \
            OCI_REPO2=conformance/repo2 OCI_RESULTS_DIR="$work/results"
        ./conformance 2>&1 | tee "$work/suite.log" || true
    )
}

[ -f "$suite/main.go" ] && check_go_for_main
if [ -n "${REGISTRY_PORT:-}" ]; then
    port=$REGISTRY_PORT
else
    port=$(free_port)
    start_server "$port"
fi
if [ -f "$suite/main.go" ]; then
    run_main "$port"
else
    build_ginkgo
    run_ginkgo "$port"
fi
